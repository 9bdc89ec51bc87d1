"""The admin path for users in bulk through the real edge: users' POST /users:batchCreate and
auth's POST /auth/credentials (what `mesh users create` calls), who may call them, and what an
unknown user id in a batch of passwords leaves behind (nothing)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from mesh.runtime import demo
from mesh.topology import Topology
from tests.support import edge_client

PROBLEM = "application/problem+json"
FORBIDDEN_BY_USERS = 7  # google.rpc.Code PERMISSION_DENIED, in the transcoder's JSON status


@pytest.fixture(scope="module")
def admin(edge_as) -> httpx.Client:
    return edge_as("admin")


@pytest.fixture(scope="module")
def anonymous(topology: Topology) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://{topology.bind_host}:{topology.edge.http_port}", timeout=10.0
    ) as client:
        yield client


def password_grant(anonymous: httpx.Client, user_id: str, password: str) -> httpx.Response:
    form = {"grant_type": "password", "username": user_id, "password": password}
    return anonymous.post("/auth/token", data=form)


def assert_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    return resp.json()


def test_an_admin_creates_users_in_one_call_and_each_logs_in_and_reads_itself(
    admin, anonymous, topology
) -> None:
    run = uuid.uuid4().hex[:8]
    wanted = [{"name": f"Bulk {n}", "email": f"bulk-{run}-{n}@example.com"} for n in range(3)]
    resp = admin.post("/users:batchCreate", json={"requests": wanted})
    assert resp.status_code == 200, resp.text
    created = resp.json()["users"]
    assert [(u["name"], u["email"]) for u in created] == [(w["name"], w["email"]) for w in wanted]
    assert all(u["roles"] == ["user"] and not u["blocked"] for u in created)

    passwords = {user["id"]: secrets.token_urlsafe(16) for user in created}
    body = {"credentials": [{"userId": u, "password": pw} for u, pw in passwords.items()]}
    resp = admin.post("/auth/credentials", json=body, timeout=60.0)
    assert (resp.status_code, resp.json()) == (200, {"updated": 3}), resp.text

    for user_id, password in passwords.items():
        granted = password_grant(anonymous, user_id, password)
        assert granted.status_code == 200, granted.text
        with edge_client(topology, granted.json()["access_token"]) as own:
            resp = own.get(f"/users/{user_id}")
        assert (resp.status_code, resp.json()["id"]) == (200, user_id), resp.text


def test_a_non_admin_is_refused_by_both_admin_endpoints(edge_as_fresh) -> None:
    """auth's refusal is a problem document; users' is its PERMISSION_DENIED in the
    transcoder's JSON status, as every gRPC error through the edge (docs/gateway.md#errors)."""
    own = edge_as_fresh()
    body = {"credentials": [{"userId": own.user_id, "password": "mine-now"}]}
    problem = assert_problem(own.http.post("/auth/credentials", json=body), 403)
    assert problem["type"] == "/problems/forbidden"
    request = {"requests": [{"name": "Sneaky", "email": f"sneaky-{uuid.uuid4().hex}@example.com"}]}
    resp = own.http.post("/users:batchCreate", json=request)
    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == FORBIDDEN_BY_USERS


def test_setting_passwords_without_a_token_is_refused_by_the_edge(anonymous) -> None:
    body = {"credentials": [{"userId": "alice", "password": "x"}]}
    problem = assert_problem(anonymous.post("/auth/credentials", json=body), 401)
    assert problem["type"] == "/problems/edge"


def test_an_unknown_user_id_in_credentials_is_a_404_problem_and_sets_nothing(
    admin, anonymous, fresh_user, mesh
) -> None:
    known = fresh_user()
    old_password = demo.password(mesh.state, known.id)
    unknown = str(uuid.uuid4())
    body = {
        "credentials": [
            {"userId": known.id, "password": "the-new-one"},
            {"userId": unknown, "password": "whatever"},
        ]
    }
    problem = assert_problem(admin.post("/auth/credentials", json=body), 404)
    assert problem["type"] == "/problems/unknown-user"
    assert unknown in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == ["credentials[1].userId"]
    assert password_grant(anonymous, known.id, old_password).status_code == 200
    refused = password_grant(anonymous, known.id, "the-new-one")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
