"""The edge's cached token exchange (mesh/runtime/token_exchange.lua) in a real Envoy without the
mesh (tests/edge_process.py): a token is exchanged by auth once and then served from the edge
worker's cache, refusals are auth's own problems, and with auth away what is cached still works
while what is not gets a 503 problem."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.edge_process import GENEROUS, Edge, running_edge


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(tmp_path_factory.mktemp("edge-state"), GENEROUS) as running:
        yield running


@pytest.fixture(autouse=True)
def auth_answers(edge: Edge) -> Iterator[None]:
    edge.upstreams.refuse = None
    edge.upstreams.max_age = 30
    yield
    edge.upstreams.refuse = None


def forwarded(body: bytes) -> str:
    """The Authorization the stubbed service was given."""
    return json.loads(body)["authorization"]


def test_a_token_is_exchanged_once_and_its_next_requests_need_no_call_to_auth(edge: Edge) -> None:
    token = edge.token("cached-user")
    before = len(edge.upstreams.exchanges)
    answers = [edge.get("plain", None, token=token) for _ in range(20)]
    asked = edge.upstreams.exchanges[before:]
    assert [status for status, _, _ in answers] == [200] * 20
    assert {forwarded(body) for _, _, body in answers} == {
        f"Bearer internal-{len('Bearer ' + token)}-{token[-12:]}"
    }
    assert asked == [f"Bearer {token}"]


def test_an_exchange_auth_says_not_to_keep_is_asked_for_every_time(edge: Edge) -> None:
    edge.upstreams.max_age = 0
    token = edge.token("uncacheable-user")
    before = len(edge.upstreams.exchanges)
    statuses = [edge.get("plain", None, token=token)[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert len(edge.upstreams.exchanges) - before == 5


def test_a_refusal_by_auth_is_auths_own_problem_document(edge: Edge) -> None:
    edge.upstreams.refuse = 403
    status, headers, body = edge.get("h2", "blocked-user")
    fields = {name.lower(): value for name, value in headers}
    assert status == 403
    assert fields["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "/problems/user-blocked"


def test_with_auth_away_cached_tokens_still_work_and_others_get_a_503_problem(
    edge: Edge,
) -> None:
    known = edge.token("known-user")
    assert edge.get("plain", None, token=known)[0] == 200
    edge.upstreams.refuse = 503  # auth answers, but not with a token: as good as away
    assert [edge.get("plain", None, token=known)[0] for _ in range(10)] == [200] * 10
    status, headers, body = edge.get("plain", "stranger")
    fields = {name.lower(): value for name, value in headers}
    assert status == 503
    assert fields["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "/problems/unavailable"


def test_public_routes_are_not_exchanged(edge: Edge) -> None:
    before = len(edge.upstreams.exchanges)
    status, _, _ = edge.get("plain", None, path="/auth/jwks")
    assert status == 200
    assert len(edge.upstreams.exchanges) == before
