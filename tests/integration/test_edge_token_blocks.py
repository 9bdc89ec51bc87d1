"""The edge's token cache and auth's list of users blocked lately (GET /auth/blocks), in a real
Envoy without the mesh (tests/edge_process.py).

While auth's answers on blocks are current, an exchange is kept past the cache's max age until
shortly before auth's max-age runs out, and a user auth names is dropped at once; without
current answers an exchange is asked for again after the max age, as auth's answer to the
refresh is then what catches a block.

The edge keeps exchanges fresh for 2 s here without news of blocks (less a random part), asks
for blocks every second, and auth allows 30 s."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mesh.topology import TokenCache
from tests.edge_process import GENEROUS, Edge, running_edge
from tests.support import wait_for

MAX_AGE_S = 2
BLOCKS_EVERY_S = 1


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    cache = TokenCache(max_age_s=MAX_AGE_S, max_entries=10_000, blocks_every_s=BLOCKS_EVERY_S)
    with running_edge(tmp_path_factory.mktemp("edge-state"), GENEROUS, cache) as running:
        yield running


@pytest.fixture(autouse=True)
def auth_answers(edge: Edge) -> Iterator[None]:
    edge.upstreams.refuse = None
    edge.upstreams.max_age = 30
    edge.upstreams.blocked = []
    edge.upstreams.blocks_current = True
    edge.upstreams.started_at = time.time() - 60  # its list is whole since a minute ago
    yield
    edge.upstreams.refuse = None
    edge.upstreams.blocked = []
    edge.upstreams.blocks_current = False


def status(edge: Edge, token: str) -> int:
    return edge.get("plain", None, token=token)[0]


def asked_for_blocks_after(edge: Edge, token: str) -> None:
    """Send the token's requests until the edge has asked auth for blocks at least once after
    the token's first exchange: only then does the edge know its exchange is covered."""
    asked = edge.upstreams.blocks_asked
    wait_for(
        lambda: status(edge, token) == 200 and edge.upstreams.blocks_asked > asked + 1,
        timeout=10,
        what="the edge to ask auth for blocks",
    )


def test_while_auth_tells_of_blocks_an_exchange_outlives_the_max_age(edge: Edge) -> None:
    token = edge.token("long-kept-user")
    assert status(edge, token) == 200
    asked_for_blocks_after(edge, token)
    statuses: list[int] = []
    asked = edge.upstreams.blocks_asked
    # The edge asks at most once every BLOCKS_EVERY_S: this many more answers take at least
    # twice the longest the exchange would stay fresh without news of blocks.
    answers = 2 * MAX_AGE_S // BLOCKS_EVERY_S + 1

    wait_for(
        lambda: (
            statuses.append(status(edge, token)) or edge.upstreams.blocks_asked >= asked + answers
        ),
        timeout=30,
        what=f"{answers} more answers on blocks",
    )

    assert set(statuses) == {200}
    assert edge.exchanged(token) == 1


def test_a_user_auth_names_as_blocked_is_dropped_at_once(edge: Edge) -> None:
    edge.upstreams.max_age = 60  # kept for at least 28 s unless dropped
    token = edge.token("named-user")
    assert status(edge, token) == 200
    asked_for_blocks_after(edge, token)

    edge.upstreams.blocked = ["named-user"]

    wait_for(
        lambda: status(edge, token) == 200 and edge.exchanged(token) == 2,
        timeout=10,
        what="the named user's exchange to be dropped and asked for again",
    )


def test_after_a_gap_in_auths_answers_older_exchanges_are_asked_for_after_the_max_age(
    edge: Edge,
) -> None:
    edge.upstreams.max_age = 60
    token = edge.token("gap-user")
    assert status(edge, token) == 200
    asked_for_blocks_after(edge, token)

    # An instance that started since the edge last heard: what it learnt before is unknown here.
    edge.upstreams.started_at = time.time() + 1

    wait_for(
        lambda: status(edge, token) == 200 and edge.exchanged(token) == 2,
        timeout=3 * MAX_AGE_S,
        what="the exchange to be asked for again",
    )


def test_without_current_answers_on_blocks_an_exchange_is_asked_for_after_the_max_age(
    edge: Edge,
) -> None:
    edge.upstreams.blocks_current = False
    token = edge.token("refreshed-user")
    assert status(edge, token) == 200

    wait_for(
        lambda: status(edge, token) == 200 and edge.exchanged(token) == 2,
        timeout=3 * MAX_AGE_S,
        what="the exchange to be asked for again",
    )
