"""Passing the caller's internal token on to the services a request or RPC calls."""

from __future__ import annotations

from services.common.auth.principal import Principal, current_principal


def bearer_headers(principal: Principal) -> dict[str, str]:
    """HTTP headers that pass the caller's internal token on to another service."""
    return {"Authorization": f"Bearer {principal.token}"}


def bearer_metadata(principal: Principal | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that passes a token on (default: the current RPC's caller)."""
    token = (principal or current_principal()).token
    return (("authorization", f"Bearer {token}"),)
