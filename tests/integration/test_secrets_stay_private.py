"""Tokens stay out of URLs and logs, and the state dir is its owner's only: a token in the query
string works on the WebSocket route alone, no log file under the state dir holds a token the
mesh was just given, and another user of the machine can read neither logs nor secrets."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import httpx
from websockets.sync.client import connect

from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology
from tests.support import wait_for

OTHER_USER = "nobody"


def test_a_token_in_the_query_string_is_refused_outside_the_websocket_route(
    topology: Topology, fresh_user
) -> None:
    user = fresh_user()
    edge = f"http://{topology.bind_host}:{topology.edge.http_port}"
    resp = httpx.get(f"{edge}/orders", params={"userId": user.id, "access_token": user.token})
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    with_header = httpx.get(
        f"{edge}/orders",
        params={"userId": user.id},
        headers={"Authorization": f"Bearer {user.token}"},
    )
    assert with_header.status_code == 200, with_header.text


def test_no_log_holds_a_token_given_in_a_header_or_in_the_websocket_url(
    mesh: Mesh, topology: Topology, fresh_user
) -> None:
    user = fresh_user()
    host, port = topology.bind_host, topology.edge.http_port
    url = f"ws://{host}:{port}/notifications/ws?access_token={user.token}"
    with connect(url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["userId"] == user.id
    answer = httpx.get(
        f"http://{host}:{port}/orders",
        params={"userId": user.id},
        headers={"Authorization": f"Bearer {user.token}"},
    )
    assert answer.status_code == 200

    def logged_paths() -> str:
        logs = [mesh.state.logs / f"{e.id}.log" for e in topology.edge.instances]
        return "".join(log.read_text(errors="replace") for log in logs)

    # An edge writes each request's access-log line when it ends: the two requests are there.
    wait_for(lambda: logged_paths().count("/notifications/ws") >= 1, timeout=30,
             what="the WebSocket request in an edge's access log")  # fmt: skip
    holding = [
        path.name
        for path in mesh.state.logs.iterdir()
        if user.token in path.read_text(errors="replace")
    ]
    assert holding == [], f"the token is in {holding}"


def mode(path: os.PathLike) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_dir_its_logs_and_its_secrets_are_the_owners_only(mesh: Mesh) -> None:
    state = mesh.state
    for folder in (state.root, state.logs, state.secrets, state.config):
        assert mode(folder) & 0o077 == 0, f"{folder} is {oct(mode(folder))}"
    for folder in (state.logs, state.secrets):
        for path in folder.iterdir():
            assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
    # And really: another account of this machine cannot read them.
    edge_log = state.logs / f"{mesh.topology.edge.instances[0].id}.log"
    assert edge_log.exists()
    for target in (edge_log, next(state.secrets.iterdir())):
        refused = subprocess.run(
            ["runuser", "-u", OTHER_USER, "--", "cat", str(target)], capture_output=True
        )
        assert refused.returncode != 0 and refused.stdout == b"", target
        assert b"Permission denied" in refused.stderr, refused.stderr
