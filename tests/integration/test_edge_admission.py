"""The edge's admission limit (Envoy's adaptive concurrency filter, first in its chain) in a real
Envoy without the mesh (tests/edge_process.py). While what it admits answers slower than the
latency target, it lets in no more than its minimum at once and answers the rest a 503 problem
with Retry-After, before the rate-limit service, the token exchange or the service see them;
once answers are fast again, it admits a whole burst."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mesh.topology import Admission
from tests.edge_process import GENEROUS, Edge, running_edge
from tests.support import wait_for

ADMISSION = Admission(latency_ms=500, min_concurrency=2)
# How long the service takes while the edge is to be overloaded: well over the target.
SLOW_S = 3.0
BURST = 12
PROBLEM = "application/problem+json"

Answer = tuple[int, dict[str, str], bytes]
_bursts = itertools.count()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge-state")
    with running_edge(root, GENEROUS, admission=ADMISSION) as running:
        yield running


@pytest.fixture(autouse=True)
def fast_service(edge: Edge) -> Iterator[None]:
    edge.upstreams.service_delay_s = 0.0
    yield
    edge.upstreams.service_delay_s = 0.0


class Burst:
    """BURST requests at once, each with a token of its own (so each admitted one is exchanged
    once): the answers, and how many calls the service and auth's exchange got meanwhile."""

    def __init__(self, edge: Edge) -> None:
        number = next(_bursts)
        calls, exchanges = len(edge.upstreams.service_calls), len(edge.upstreams.exchanges)

        def one(i: int) -> Answer:
            status, headers, body = edge.get("plain", f"burst-{number}-{i}")
            return status, dict(headers), body

        with ThreadPoolExecutor(BURST) as pool:
            self.answers = list(pool.map(one, range(BURST)))
        self.service_calls = len(edge.upstreams.service_calls) - calls
        self.exchanges = len(edge.upstreams.exchanges) - exchanges

    def admitted(self) -> list[Answer]:
        return [a for a in self.answers if a[0] == 200]

    def refused(self) -> list[Answer]:
        return [a for a in self.answers if a[0] != 200]


def overloaded(edge: Edge) -> Burst:
    """With the service slow, bursts until the edge refuses part of one: that burst."""
    edge.upstreams.service_delay_s = SLOW_S

    def refusing() -> Burst | None:
        burst = Burst(edge)
        return burst if burst.refused() else None

    return wait_for(refusing, timeout=120, what="the edge to refuse part of a burst")


def test_an_overloaded_edge_answers_the_excess_a_503_problem_before_auth_or_the_service(
    edge: Edge,
) -> None:
    burst = overloaded(edge)
    assert len(burst.admitted()) >= ADMISSION.min_concurrency, burst.answers
    for status, headers, body in burst.refused():
        assert status == 503, body
        assert headers["content-type"] == PROBLEM, headers
        assert headers["retry-after"] == "1", headers
        problem = json.loads(body)
        assert (problem["status"], problem["title"]) == (503, "reached_concurrency_limit")
    # A refused request reached neither the token exchange nor the service.
    assert burst.exchanges == burst.service_calls == len(burst.admitted()), burst.answers


def test_once_answers_are_fast_again_the_edge_admits_a_whole_burst(edge: Edge) -> None:
    overloaded(edge)
    edge.upstreams.service_delay_s = 0.0
    wait_for(
        lambda: not Burst(edge).refused(),
        timeout=60,
        what="the edge to admit every request of a burst again",
    )
