"""The edge's rate-limit filter in a real Envoy, in front of the real rate-limit service and
Redis, without the mesh (tests/edge_process.py). The mesh-backed twin is
tests/integration/test_rate_limits_through_edge.py; this one also covers the rate-limit service
going away."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from mesh.runtime import process
from mesh.topology import RateLimit
from tests.edge_process import Edge, running_edge

# Small, so the test is quick; the topology's own numbers are test_ratelimit_service.py's.
PER_USER = RateLimit(requests=12, per_seconds=60)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("edge-state"), PER_USER) as running:
        yield running


def ratelimit_headers(headers: list[tuple[str, str]]) -> Counter:
    return Counter(name.lower() for name, _ in headers if name.lower().startswith("x-ratelimit-"))


ONE_SET = Counter(["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"])


def test_one_user_has_one_budget_over_every_listener(edge: Edge) -> None:
    left = PER_USER.per_seconds - time.time() % PER_USER.per_seconds
    if left < 10:  # the service counts in fixed windows aligned to the clock
        time.sleep(left + 0.2)
    listeners = ["plain", "h2", "h3"]
    spent = [edge.get(listeners[i % 3], "flooder")[0] for i in range(PER_USER.requests)]
    refused = {name: edge.get(name, "flooder") for name in listeners}

    assert spent == [200] * PER_USER.requests
    for name, (status, headers, body) in refused.items():
        assert status == 429, name
        fields = {n.lower(): v for n, v in headers}
        assert fields["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 429
        assert ratelimit_headers(headers) == ONE_SET, (name, headers)
        assert fields["x-ratelimit-remaining"] == "0"
        assert fields["x-ratelimit-limit"].startswith(f"{PER_USER.requests}, ")
    status, headers, _ = edge.get("plain", "someone-else")
    assert status == 200
    assert ratelimit_headers(headers) == ONE_SET


def test_with_redis_or_the_rate_limit_service_down_requests_pass_unlimited(edge: Edge) -> None:
    """Fail open: an outage of the limiter must not take the API down."""
    for down in ("redis", "ratelimit"):
        assert process.stop(edge.state, down, timeout=5)
        answers = [edge.get("plain", f"while-{down}-is-down") for _ in range(PER_USER.requests + 3)]
        assert [status for status, _, _ in answers] == [200] * len(answers), down
        assert all(not ratelimit_headers(headers) for _, headers, _ in answers), down
