"""VerifiedTokens: an internal token is verified once, then only its time window is checked."""

import asyncio
from datetime import UTC, datetime

import pytest

from services.auth.tokens import generate_signing_key, internal_claims, sign
from services.common.auth.jwt import LEEWAY_S
from services.common.auth.principal import Principal, Unauthenticated
from services.common.auth.verified_tokens import VerifiedTokens

KEY = generate_signing_key(datetime.now(UTC))
NOW = 1_900_000_000.0


class CountingKeys:
    """A KeySource that counts how often a signature had to be checked (one key lookup each)."""

    def __init__(self) -> None:
        self.lookups = 0

    async def key(self, kid: str):
        self.lookups += 1
        return KEY.verification_key if kid == KEY.kid else None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def token_for(sub: str = "alice", *, now: float = NOW, **changes) -> str:
    claims = internal_claims(sub=sub, roles=["user"], now=int(now)) | changes
    return sign(claims, KEY)


def principal(tokens: VerifiedTokens, token: str) -> Principal:
    return asyncio.run(tokens.principal(token))


def test_a_token_is_verified_once_and_then_served_from_the_cache():
    keys, clock = CountingKeys(), Clock()
    tokens = VerifiedTokens(keys, clock=clock)
    token = token_for()
    first = principal(tokens, token)
    clock.now += 60
    assert principal(tokens, token) == first == Principal("alice", frozenset({"user"}))
    assert keys.lookups == 1


def test_a_cached_token_is_refused_once_it_expires():
    keys, clock = CountingKeys(), Clock()
    tokens = VerifiedTokens(keys, clock=clock)
    token = token_for(exp=int(NOW) + 120)
    principal(tokens, token)
    clock.now = NOW + 120 + LEEWAY_S
    with pytest.raises(Unauthenticated, match="expired"):
        principal(tokens, token)
    assert len(tokens) == 0


def test_a_refused_token_is_not_remembered():
    keys = CountingKeys()
    tokens = VerifiedTokens(keys, clock=Clock())
    forged = token_for()[:-4] + "AAAA"
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            principal(tokens, forged)
    assert keys.lookups == 2 and len(tokens) == 0


def test_the_cache_keeps_the_most_recently_used_tokens_up_to_its_size():
    keys = CountingKeys()
    tokens = VerifiedTokens(keys, clock=Clock(), max_tokens=2)
    a, b, c = (token_for(sub) for sub in ("a", "b", "c"))
    principal(tokens, a)
    principal(tokens, b)
    principal(tokens, a)  # a is the most recent now
    principal(tokens, c)  # b goes
    assert len(tokens) == 2
    lookups = keys.lookups
    principal(tokens, a)
    assert keys.lookups == lookups
    principal(tokens, b)
    assert keys.lookups == lookups + 1
