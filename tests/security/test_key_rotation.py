"""Signing-key rotation on the real mesh: the key a rotation makes sign was published before,
so the first token it signs is accepted at once by both edges (each with its own cached JWKS)
and both auth instances; tokens of the key it replaces keep working."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from jose import jwt

from mesh.runtime import demo
from mesh.runtime.supervisor import Mesh
from tests.support import FreshUser, wait_for

# How long an auth instance may sign with the previous key after the rotation (its key reload
# interval) and slack for a busy machine.
RELOAD_SLACK_S = 90


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def published_kids(mesh: Mesh, port: int | None = None) -> set[str]:
    """The JWKS's kids through the edge (either auth instance), or from one auth instance."""
    topology = mesh.topology
    base = f"http://{topology.bind_host}:{port or topology.edge.http_port}"
    resp = httpx.get(f"{base}/auth/jwks", timeout=10.0)
    assert resp.status_code == 200, resp.text
    return {key["kid"] for key in resp.json()["keys"]}


def test_a_token_signed_with_the_next_key_is_accepted_by_both_edges_and_both_auth_instances_at_once(
    mesh: Mesh, tokens, fresh_user: Callable[[], FreshUser]
) -> None:
    topology = mesh.topology
    user = fresh_user()
    password = demo.password(mesh.state, user.id)
    before = published_kids(mesh)
    auth_ports = [instance.port for instance in topology.service("auth").instances]

    rotated = httpx.post(
        f"http://{topology.bind_host}:{auth_ports[0]}/auth/keys/rotate",
        headers={"Authorization": f"Bearer {tokens.internal('admin')}"},
        timeout=30.0,
    )
    assert rotated.status_code == 200, rotated.text
    rotation = rotated.json()
    assert rotation["kid"] in before, "the key that signs next was published before the rotation"
    assert rotation["retired_kid"] in before
    rotated_kids = {rotation["kid"], rotation["next_kid"], rotation["retired_kid"]}
    assert rotated_kids <= published_kids(mesh, auth_ports[0])
    # The other instance publishes the new next key from its next key reload (30 s).
    wait_for(
        lambda: rotated_kids <= published_kids(mesh, auth_ports[1]),
        timeout=RELOAD_SLACK_S,
        what="the other auth instance to publish the new next key",
        interval=1.0,
    )

    starts_in = datetime.fromisoformat(rotation["active_from"]) - datetime.now(UTC)
    base = f"http://{topology.bind_host}:{topology.edge.http_port}"

    def signed_with_the_new_key() -> str | None:
        resp = httpx.post(
            f"{base}/auth/token",
            data={"grant_type": "password", "username": user.id, "password": password},
            timeout=10.0,
        )
        assert resp.status_code == 200, resp.text
        token: str = resp.json()["access_token"]
        return token if kid_of(token) == rotation["kid"] else None

    token = wait_for(
        signed_with_the_new_key,
        timeout=max(starts_in.total_seconds(), 0) + RELOAD_SLACK_S,
        what=f"a token signed with {rotation['kid']}",
        interval=1.0,
    )

    # At once: one request per edge (each has its own JWKS cache) and per auth instance.
    for edge in topology.edge.instances:
        with httpx.Client(
            base_url=f"http://{topology.bind_host}:{edge.http_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        ) as client:
            resp = client.get("/orders", params={"userId": user.id})
            assert resp.status_code == 200, (edge.id, resp.status_code, resp.text)
    for port in auth_ports:
        check = httpx.get(
            f"http://{topology.bind_host}:{port}/auth/ext-authz/orders",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )
        assert check.status_code == 200, (port, check.status_code, check.text)

    # A token of the key it replaced is still good.
    with httpx.Client(base_url=base, timeout=10.0) as client:
        old = client.get(
            "/orders",
            params={"userId": user.id},
            headers={"Authorization": f"Bearer {user.token}"},
        )
    assert old.status_code == 200, old.text
