"""Who is calling: the verified Principal, the caller of the request or RPC being handled, and
the authorization rules every service applies to it."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from services.common.errors import PermissionDenied

ADMIN_ROLE = "admin"

_CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "shopmesh_principal", default=None
)


class Unauthenticated(Exception):
    """No usable token: missing, malformed, badly signed, expired or not meant for us.

    `reason` is safe to show to the caller; it never contains the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and roles, and the token itself for forwarding."""

    sub: str
    roles: frozenset[str]
    token: str = field(default="", repr=False, compare=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles


def current_principal() -> Principal:
    """The verified caller of the RPC or request being handled (set by AuthInterceptor and by
    the aiohttp auth middleware)."""
    principal = _CURRENT_PRINCIPAL.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller in this context")
    return principal


@contextmanager
def calling_as(principal: Principal) -> Iterator[None]:
    """`principal` is `current_principal()` inside the block (the task's context)."""
    reset = _CURRENT_PRINCIPAL.set(principal)
    try:
        yield
    finally:
        _CURRENT_PRINCIPAL.reset(reset)


def require_role(principal: Principal, *roles: str) -> None:
    """PermissionDenied unless the principal has at least one of `roles`."""
    if not any(principal.has_role(role) for role in roles):
        raise PermissionDenied(f"requires the role {' or '.join(roles)}")


def require_self_or_admin(principal: Principal, user_id: str, *also: str) -> None:
    """PermissionDenied unless the principal is the user `user_id`, an admin, or has one of the
    roles in `also` (e.g. "service" for calls made by another service on its own behalf)."""
    if principal.sub == user_id or principal.has_role(ADMIN_ROLE):
        return
    if not any(principal.has_role(role) for role in also):
        raise PermissionDenied("only the user themselves or an admin may do this")
