"""The suites' token cache (tests/support.py): a long session never hands out a token that
expires while a test holds it."""

from __future__ import annotations

import base64
import json
import time

import httpx

from tests.support import TOKEN_MARGIN_S, BearerAuth, fresh, seconds_left


def unsigned_jwt(exp: float) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.signature"


def test_seconds_left_reads_the_expiry_claim() -> None:
    assert 299 < seconds_left(unsigned_jwt(time.time() + 300)) <= 300


def test_a_cached_token_is_kept_while_it_has_time_left_and_minted_again_near_its_expiry() -> None:
    minted: list[str] = []

    def mint(lifetime_s: float) -> str:
        minted.append(unsigned_jwt(time.time() + lifetime_s))
        return minted[-1]

    cache: dict[str, str] = {}
    first = fresh(cache, "alice", lambda: mint(TOKEN_MARGIN_S + 60))
    assert fresh(cache, "alice", lambda: mint(600)) == first
    cache["alice"] = unsigned_jwt(time.time() + TOKEN_MARGIN_S - 1)
    assert fresh(cache, "alice", lambda: mint(600)) == minted[-1] != first
    assert len(minted) == 2


def test_bearer_auth_asks_for_the_token_on_every_request() -> None:
    tokens = iter(["t1", "t2"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(204)

    with httpx.Client(
        transport=httpx.MockTransport(handler), auth=BearerAuth(lambda: next(tokens))
    ) as client:
        client.get("http://edge/")
        client.get("http://edge/")
        client.get("http://edge/", headers={"authorization": "Bearer own"})
    assert seen == ["Bearer t1", "Bearer t2", "Bearer own"]
