"""`mesh users create` (mesh/runtime/users.py) against a fake edge: calls of at most 1000, the
passwords merged into the state dir's owner-only secrets/users.json, which `mesh token` reads."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from mesh.runtime import demo, users
from mesh.runtime.paths import StateDir
from mesh.topology import load


class FakeEdge:
    """users' batchCreate and auth's credentials as the edge passes them on."""

    def __init__(self, credentials_status: int = 200) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.credentials_status = credentials_status
        self.made = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((request.url.path, body))
        if request.url.path == "/users:batchCreate":
            created = []
            for each in body["requests"]:
                self.made += 1
                created.append({"id": f"id-{self.made}", **each})
            return httpx.Response(200, json={"users": created})
        if self.credentials_status != 200:
            problem = {"type": "/problems/edge", "status": 504, "detail": "upstream timeout"}
            return httpx.Response(self.credentials_status, json=problem)
        return httpx.Response(200, json={"updated": len(body["credentials"])})


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path)
    state.ensure()
    seed = {"users": {"alice": "alice-pw", "admin": "admin-pw"}, "clients": {}}
    demo.seed_file(state).write_text(json.dumps(seed))
    return state


def through(edge: FakeEdge, monkeypatch: pytest.MonkeyPatch) -> None:
    client = httpx.Client(base_url="https://edge", transport=httpx.MockTransport(edge.handle))
    monkeypatch.setattr(users, "admin_client", lambda topology, state, placement: client)


def test_users_are_created_and_given_passwords_1000_per_call(state, monkeypatch) -> None:
    edge = FakeEdge()
    through(edge, monkeypatch)
    created = users.create_users(load(), state, 1500, prefix="load")
    assert created == [f"id-{n}" for n in range(1, 1501)]
    assert [(path, len(next(iter(body.values())))) for path, body in edge.calls] == [
        ("/users:batchCreate", 1000),
        ("/auth/credentials", 1000),
        ("/users:batchCreate", 500),
        ("/auth/credentials", 500),
    ]
    first = edge.calls[0][1]["requests"][0]
    assert first["name"] == "load 0"
    assert first["email"].startswith("load-") and first["email"].endswith("-0@shopmesh.local")
    sent = {c["userId"]: c["password"] for c in edge.calls[1][1]["credentials"]}
    saved = demo.created_passwords(state)
    assert len(saved) == 1500 and all(saved[user] == pw for user, pw in sent.items())
    assert len(set(saved.values())) == 1500


def test_the_passwords_file_is_owner_only_and_merged_with_what_is_there(state, monkeypatch) -> None:
    demo.created_users_file(state).write_text(json.dumps({"earlier": "pw"}))
    through(FakeEdge(), monkeypatch)
    users.create_users(load(), state, 2)
    path = demo.created_users_file(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())) == {"earlier", "id-1", "id-2"}


def test_mesh_token_finds_a_created_users_password(state, monkeypatch) -> None:
    through(FakeEdge(), monkeypatch)
    (user_id,) = users.create_users(load(), state, 1)
    assert demo.password(state, user_id) == demo.created_passwords(state)[user_id]
    assert demo.password(state, "alice") == "alice-pw"
    with pytest.raises(KeyError, match=r"users\.json"):
        demo.password(state, "nobody")


def test_a_refused_call_says_why_and_saves_no_password(state, monkeypatch) -> None:
    through(FakeEdge(credentials_status=504), monkeypatch)
    with pytest.raises(users.UsersError, match=r"POST /auth/credentials: 504 upstream timeout"):
        users.create_users(load(), state, 3)
    assert demo.created_passwords(state) == {}


@pytest.mark.parametrize(("count", "prefix"), [(0, "user"), (1, "Bad Name"), (1, "-x"), (1, "")])
def test_a_bad_count_or_prefix_is_refused_before_any_call(state, count, prefix) -> None:
    with pytest.raises(users.UsersError):
        users.create_users(load(), state, count, prefix=prefix)


def test_setting_passwords_waits_as_long_as_the_edge_route() -> None:
    (route,) = [r for r in load().edge.routes if r.prefix == "/auth/credentials"]
    assert users.credentials_timeout_s(load()) > route.timeout_ms / 1000
