"""How the edge's token-exchange cache stays bounded, in a real Envoy without the mesh
(tests/edge_process.py): an exchange past auth's max-age is dropped before any usable one, and
only a cache full of usable exchanges starts again empty."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mesh.topology import TokenCache
from tests.edge_process import GENEROUS, Edge, running_edge
from tests.support import wait_for

MAX_ENTRIES = 2
SHORT_MAX_AGE_S = 1


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    cache = TokenCache(max_age_s=60, max_entries=MAX_ENTRIES, blocks_every_s=1)
    with running_edge(tmp_path_factory.mktemp("edge-state"), GENEROUS, cache) as running:
        yield running


@pytest.fixture(autouse=True)
def auth_answers(edge: Edge) -> Iterator[None]:
    edge.upstreams.max_age = 30
    yield
    edge.upstreams.max_age = 30


def served(edge: Edge, token: str) -> None:
    assert edge.get("plain", None, token=token)[0] == 200


def test_a_full_cache_drops_the_exchanges_past_auths_max_age_and_keeps_the_usable_ones(
    edge: Edge,
) -> None:
    edge.upstreams.max_age = SHORT_MAX_AGE_S
    short_lived = edge.token("briefly-allowed-user")
    served(edge, short_lived)
    asked_at = time.time()
    edge.upstreams.max_age = 30
    kept = edge.token("steady-user")
    served(edge, kept)
    wait_for(
        lambda: time.time() > asked_at + SHORT_MAX_AGE_S,
        timeout=5,
        what="the short-lived exchange to pass auth's max-age",
    )

    served(edge, edge.token("newcomer"))  # the cache is full: the sweep makes room
    served(edge, kept)

    assert edge.exchanged(kept) == 1, "the usable exchange survived the newcomer"


def test_a_cache_full_of_usable_exchanges_starts_again_empty(edge: Edge) -> None:
    first, second = edge.token("first-user"), edge.token("second-user")
    served(edge, first)
    served(edge, second)

    served(edge, edge.token("third-user"))
    served(edge, first)

    assert edge.exchanged(first) == 2, "the cache was emptied to take the third user"
