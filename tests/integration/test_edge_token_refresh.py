"""A cached exchange past its fresh time, in a real Envoy without the mesh (tests/edge_process.py):
one request refreshes it while the token's other requests keep the exchange auth allowed, a
refusal drops it at once, and with auth away it works until auth's max-age runs out.

The edge keeps exchanges fresh for 2 s here (less a random part) and auth allows 30 s, so a token
is past fresh and still usable within seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mesh.topology import TokenCache
from tests.edge_process import GENEROUS, Edge, running_edge
from tests.support import wait_for

FRESH_FOR_S = 2
BURST = 8


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    cache = TokenCache(max_age_s=FRESH_FOR_S, max_entries=10_000, blocks_every_s=1)
    with running_edge(tmp_path_factory.mktemp("edge-state"), GENEROUS, cache) as running:
        yield running


@pytest.fixture(autouse=True)
def auth_answers(edge: Edge) -> Iterator[None]:
    edge.upstreams.refuse = None
    edge.upstreams.max_age = 30
    edge.upstreams.delay_s = 0.0
    yield
    edge.upstreams.refuse = None
    edge.upstreams.delay_s = 0.0


def burst(edge: Edge, token: str) -> list[tuple[int, str]]:
    """BURST requests of one token at once: (status, the Authorization the service got)."""

    def one(_: int) -> tuple[int, str]:
        status, _, body = edge.get("plain", None, token=token)
        return status, json.loads(body).get("authorization", "") if status == 200 else ""

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(one, range(BURST)))


def until_asked_again(edge: Edge, token: str, action) -> list:
    """Repeat `action` until auth has been asked for `token` once more; its last result."""
    before = edge.exchanged(token)
    results: list = []

    def asked_again() -> bool:
        results.append(action())
        return edge.exchanged(token) > before

    wait_for(asked_again, timeout=10, what="the cached exchange to pass its fresh time")
    return results[-1]


def test_a_token_past_fresh_is_refreshed_by_one_request_while_the_others_keep_it(
    edge: Edge,
) -> None:
    token = edge.token("busy-user")
    assert edge.get("plain", None, token=token)[0] == 200
    edge.upstreams.delay_s = 1.0  # the refresh is slow: the burst arrives while it runs

    answers = until_asked_again(edge, token, lambda: burst(edge, token))

    assert [status for status, _ in answers] == [200] * BURST
    assert edge.exchanged(token) == 2, "one refresh for the whole burst"


def test_a_slow_refresh_leaves_the_exchange_fresh_for_the_tokens_next_request(
    edge: Edge,
) -> None:
    token = edge.token("slowly-refreshed-user")
    assert edge.get("plain", None, token=token)[0] == 200
    edge.upstreams.delay_s = 1.5  # longer than the whole fresh time counted from the question

    assert until_asked_again(edge, token, lambda: edge.get("plain", None, token=token)[0]) == 200
    refreshed = edge.exchanged(token)

    assert edge.get("plain", None, token=token)[0] == 200
    assert edge.exchanged(token) == refreshed, "fresh time counts from auth's answer"


def test_a_refused_refresh_drops_the_token_at_once(edge: Edge) -> None:
    token = edge.token("soon-blocked-user")
    assert edge.get("plain", None, token=token)[0] == 200
    edge.upstreams.refuse = 403

    status = until_asked_again(edge, token, lambda: edge.get("plain", None, token=token)[0])

    assert status == 403
    assert [edge.get("plain", None, token=token)[0] for _ in range(3)] == [403] * 3


def test_with_auth_away_a_token_past_fresh_works_until_auths_max_age(edge: Edge) -> None:
    token = edge.token("steady-user")
    assert edge.get("plain", None, token=token)[0] == 200
    edge.upstreams.refuse = 503  # auth answers, but not with a token: as good as away

    status = until_asked_again(edge, token, lambda: edge.get("plain", None, token=token)[0])

    assert status == 200
    assert [edge.get("plain", None, token=token)[0] for _ in range(3)] == [200] * 3
