"""Internal tokens verified once per process, not once per request."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.common.auth.jwt import LEEWAY_S, KeySource, principal_of, verify_internal_claims
from services.common.auth.principal import Principal, Unauthenticated

MAX_VERIFIED_TOKENS = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    not_before: float
    expires: float


class VerifiedTokens:
    """Internal tokens verified once per process, not once per request.

    A caller sends the same internal JWT with every request until it expires (the edge's token
    exchange hands out one per external token), and an RS256 verification in Python costs more
    than the rest of a cached GET. So the Principal of a token that passed every check is kept
    until the token expires: a token seen before only has its time window checked again.

    What this gives up: a token stays accepted until its `exp` even if its signing key left the
    JWKS meanwhile (internal tokens live minutes: services/auth/tokens.py). Only tokens that
    verified are kept; a refused token is verified, and refused, again every time.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        max_tokens: int = MAX_VERIFIED_TOKENS,
        leeway_s: int = LEEWAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._max_tokens = max_tokens
        self._leeway_s = leeway_s
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def principal(self, token: str) -> Principal:
        """The Principal of a valid internal token; Unauthenticated(reason) otherwise."""
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if known.expires <= now - self._leeway_s:
                del self._verified[token]
                raise Unauthenticated("token expired")
            if known.not_before <= now + self._leeway_s:
                self._verified.move_to_end(token)
                return known.principal
        claims = await verify_internal_claims(token, self._keys, leeway_s=self._leeway_s, now=now)
        principal = principal_of(claims, token)
        self._verified[token] = _Verified(principal, claims["nbf"], claims["exp"])
        if len(self._verified) > self._max_tokens:
            self._verified.popitem(last=False)
        return principal

    def __len__(self) -> int:
        return len(self._verified)
