"""The edge gateway with real clients: TLS + HTTP/2, HTTP/3, WebSocket, JWT, REST-gRPC
transcoding and per-user authorization (its rate limits: test_rate_limits_through_edge.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import time
import uuid

import httpx
import pytest
from jose import jwt
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mesh.components import postgres
from mesh.components.edge import EXTERNAL_AUDIENCE, issuer
from mesh.placement import NativePlacement
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology
from shopmesh.users.v1 import users_pb2
from tests.h3client import h3_get
from tests.support import wait_for

ORDER = {"items": [{"productId": "book", "quantity": 1}]}


def https_base(topology: Topology) -> str:
    return f"https://{topology.bind_host}:{topology.edge.https_port}"


def ca_file(mesh: Mesh) -> str:
    return str(edge_certs(mesh.state).ca_cert)


def place(edge: httpx.Client, user: str = "alice") -> dict:
    resp = edge.post("/orders", json={"userId": user, **ORDER})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_https_negotiates_http2_and_advertises_http3(mesh: Mesh, tokens) -> None:
    verify = ssl.create_default_context(cafile=ca_file(mesh))
    with httpx.Client(http2=True, verify=verify, timeout=5.0) as client:
        resp = client.get(
            f"{https_base(mesh.topology)}/orders",
            params={"userId": "alice"},
            headers={"Authorization": f"Bearer {tokens.external('alice')}"},
        )
    assert resp.status_code == 200, resp.text
    assert resp.http_version == "HTTP/2"
    assert f'h3=":{mesh.topology.edge.https_port}"' in resp.headers["alt-svc"]


def test_http3_returns_the_same_order_as_tcp(mesh: Mesh, edge: httpx.Client, tokens) -> None:
    order = place(edge)
    headers = {"authorization": f"Bearer {tokens.external('alice')}"}

    status, body = h3_get(
        mesh.topology.bind_host, mesh.topology.edge.https_port, f"/orders/{order['id']}",
        headers, ca_file(mesh),
    )  # fmt: skip

    assert status == 200, body
    assert json.loads(body) == edge.get(f"/orders/{order['id']}").json()


def ws_url(topology: Topology, token: str | None) -> str:
    query = f"?access_token={token}" if token else ""
    return f"ws://{topology.bind_host}:{topology.edge.http_port}/notifications/ws{query}"


def test_websocket_delivers_the_status_change_of_the_users_own_order(
    topology: Topology, edge: httpx.Client, tokens
) -> None:
    with connect(ws_url(topology, tokens.external("alice")), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "hello", "userId": "alice"}
        order = place(edge)
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            # The socket also gets the order's PaymentSucceeded (payment-events); this test
            # watches the order's own status change (order-events).
            if (
                message.get("type") == "shopmesh.order.status_changed.v1"
                and message.get("data", {}).get("orderId") == order["id"]
            ):
                seen = message
                break
    assert seen is not None, "the order's status change never arrived"
    assert seen["userId"] == "alice"
    assert seen["data"]["status"] == "PAID"
    assert seen["type"] == "shopmesh.order.status_changed.v1"


@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no token", "bad token"])
def test_websocket_without_a_valid_token_is_refused(topology: Topology, token) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(topology, token), open_timeout=10)
    assert refused.value.response.status_code == 401


# --- JWT attacks ---------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def active_key(mesh: Mesh) -> tuple[str, str, dict]:
    """auth's active signing key (kid, private PEM, public JWK), read from its database."""
    password = postgres.passwords(mesh.state, mesh.topology)["auth"]
    url = postgres.database_url(mesh.topology, mesh.placement, "auth", password, "auth")

    async def read():
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            # The key signing now: the latest to have started (a next key has no active_from).
            return await conn.fetchrow(
                """
                SELECT kid, private_key_pem, public_jwk FROM signing_keys
                WHERE active_from <= now() ORDER BY active_from DESC, created_at DESC LIMIT 1
                """
            )
        finally:
            await conn.close()

    row = asyncio.run(read())
    jwk = row["public_jwk"]
    return row["kid"], row["private_key_pem"], json.loads(jwk) if isinstance(jwk, str) else jwk


def claims(topology: Topology, **overrides) -> dict:
    now = int(time.time())
    iss = issuer(topology, NativePlacement.of(topology))
    base = {"iss": iss, "aud": EXTERNAL_AUDIENCE, "sub": "alice", "iat": now,
            "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()), "gty": "password",
            "scope": "orders", "client_id": "shopmesh-cli"}  # fmt: skip
    base.update(overrides)
    return base


def attack_tokens(mesh: Mesh) -> dict[str, str]:
    kid, pem, jwk = active_key(mesh)
    topology = mesh.topology
    now = int(time.time())

    def signed(**overrides) -> str:
        return jwt.encode(claims(topology, **overrides), pem, algorithm="RS256",
                          headers={"kid": kid})  # fmt: skip

    valid = signed()
    head, payload, signature = valid.split(".")
    tampered_payload = b64(json.dumps(claims(topology, sub="admin")).encode())
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    hs_body = b64(json.dumps(claims(topology)).encode())
    public_pem = jwt_public_pem(jwk)
    hs_signature = b64(
        hmac.new(public_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest()
    )
    unknown_kid = jwt.encode(claims(topology), pem, algorithm="RS256", headers={"kid": "nope"})
    return {
        "valid": valid,
        "expired": signed(exp=now - 120, iat=now - 600, nbf=now - 600),
        "not yet valid": signed(nbf=now + 600, iat=now),
        "wrong issuer": signed(iss="https://evil.example/auth"),
        "wrong audience": signed(aud="someone-else"),
        "tampered signature": f"{head}.{tampered_payload}.{signature}",
        "alg none": f"{none_header}.{payload}.",
        "HS256 with the public key": f"{hs_header}.{hs_body}.{hs_signature}",
        "unknown kid": unknown_kid,
    }


def jwt_public_pem(jwk: dict) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    def number(field: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(jwk[field] + "=="), "big")

    key = RSAPublicNumbers(number("e"), number("n")).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_jwt_attacks_are_refused_and_a_valid_token_passes(mesh: Mesh) -> None:
    base = f"http://{mesh.topology.bind_host}:{mesh.topology.edge.http_port}"
    results = {}
    with httpx.Client(base_url=base, timeout=5.0) as client:
        results["missing"] = client.get("/orders", params={"userId": "alice"}).status_code
        for name, token in attack_tokens(mesh).items():
            resp = client.get(
                "/orders", params={"userId": "alice"},
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            results[name] = resp.status_code
            if resp.status_code == 401:
                assert resp.headers["content-type"].startswith("application/problem+json")
    assert results.pop("valid") == 200
    assert results == dict.fromkeys(results, 401), results


# --- authorization, transcoding ----------------------------------------------------------------


def test_a_user_cannot_read_another_users_orders(edge_as) -> None:
    bobs = place(edge_as("bob"), "bob")
    alice = edge_as("alice")
    assert alice.get("/orders", params={"userId": "bob"}).status_code == 403
    # Another user's order is reported as not found: its existence is not alice's to know.
    assert alice.get(f"/orders/{bobs['id']}").status_code == 404
    assert edge_as("admin").get(f"/orders/{bobs['id']}").json() == bobs


def test_a_non_admin_cannot_block_users_but_an_admin_can(edge_as) -> None:
    refused = edge_as("alice").post("/users/bob:block", json={"reason": "try"})
    assert refused.status_code == 403, refused.text
    assert edge_as("bob").get("/users/bob").json()["blocked"] is False


def test_a_blocked_users_cached_token_is_refused_at_the_edge_within_seconds(
    edge_as_fresh, users_grpc
) -> None:
    user_id, client = edge_as_fresh()
    own_orders = {"userId": user_id}
    assert client.get("/orders", params=own_orders).status_code == 200  # fresh for 30-60 s

    users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user_id, reason="test"))

    # Sooner than the edge would ask auth again for the token on its own: the edge heard of the
    # block from auth's list of users blocked lately (mesh/runtime/token_exchange.lua).
    refused = wait_for(
        lambda: (resp := client.get("/orders", params=own_orders)).status_code == 403 and resp,
        timeout=25,
        what="the blocked user's read to be refused at the edge",
    )
    assert refused.json()["type"] == "/problems/user-blocked"


def test_auths_list_of_blocked_users_is_not_public(edge: httpx.Client) -> None:
    resp = edge.get("/auth/blocks")

    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"


def test_users_and_payments_are_served_as_rest_json_through_the_transcoder(
    edge: httpx.Client,
) -> None:
    user = edge.get("/users/alice")
    assert user.status_code == 200, user.text
    assert user.headers["content-type"].startswith("application/json")
    assert user.json()["id"] == "alice"
    assert "user" in user.json()["roles"]

    order = place(edge)
    payment = edge.get(f"/payments/{order['paymentId']}")
    assert payment.status_code == 200, payment.text
    assert payment.json()["orderId"] == order["id"]
    assert payment.json()["status"] == "PAYMENT_STATUS_SUCCEEDED"
