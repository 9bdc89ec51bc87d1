"""Auth's records that are not tokens: plain Python, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Client:
    """An OAuth client (client_credentials grant): its secret's hash and its roles."""

    client_id: str
    secret_hash: str
    roles: frozenset[str]
