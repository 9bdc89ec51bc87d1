"""Errors the mesh makes behind the edge reach clients as problem documents, like the edge's own:
a sidecar's intention denial (docs/gateway.md#errors); and request headers that a sidecar or a
service would refuse in its own format are refused by the edge first, as a 431 problem on every
protocol (docs/gateway.md#request-header-limits)."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable

import grpc
import httpx

from mesh.components.consul import ConsulClient
from mesh.components.edge import MAX_REQUEST_HEADER_BYTES, MAX_REQUEST_HEADERS
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from shopmesh.payments.v1 import payments_pb2, payments_pb2_grpc
from tests.h3client import h3_get_with_headers
from tests.support import BearerInterceptor, intention_removed, wait_for

PROBLEM = "application/problem+json"
MESH_DENIAL = "/problems/forbidden-by-mesh"
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def mesh_denial(resp: httpx.Response) -> dict | None:
    """The problem document if `resp` is the edge's rewrite of a sidecar's RBAC denial."""
    if resp.status_code != 403 or not resp.headers.get("content-type", "").startswith(PROBLEM):
        return None
    problem = resp.json()
    return problem if problem.get("type") == MESH_DENIAL else None


def assert_is_the_mesh_denial(problem: dict) -> None:
    assert problem["status"] == 403
    assert problem["title"]
    assert "intentions" in problem["detail"]


def test_an_intention_denial_of_an_http_service_is_a_403_problem(
    mesh: Mesh, edge: httpx.Client, consul: ConsulClient
) -> None:
    def healed() -> bool:
        return edge.get("/orders", params={"userId": "alice"}).status_code == 200

    with intention_removed(mesh, consul, "orders", healed):
        problem = wait_for(
            lambda: mesh_denial(edge.get("/orders", params={"userId": "alice"})),
            timeout=20,
            what="the orders sidecar to deny edge -> orders as a forbidden-by-mesh problem",
        )
    assert_is_the_mesh_denial(problem)


def test_an_intention_denial_of_a_transcoded_grpc_service_is_the_same_problem(
    mesh: Mesh, edge: httpx.Client, consul: ConsulClient
) -> None:
    with intention_removed(mesh, consul, "payments", unknown_payment_is_404(edge)):
        problem = wait_for(
            lambda: mesh_denial(edge.get(f"/payments/{uuid.uuid4()}")),
            timeout=20,
            what="the payments sidecar to deny the transcoded GET /payments/{id}",
        )
    assert_is_the_mesh_denial(problem)


def unknown_payment_is_404(edge: httpx.Client) -> Callable[[], bool]:
    """edge -> payments allowed: an unknown payment is 404, not the mesh's 403."""
    return lambda: edge.get(f"/payments/{uuid.uuid4()}").status_code == 404


def test_a_native_grpc_client_of_the_edge_still_gets_permission_denied(
    mesh: Mesh, consul: ConsulClient, tokens, edge: httpx.Client
) -> None:
    topology = mesh.topology
    channel = grpc.intercept_channel(
        grpc.insecure_channel(f"{topology.bind_host}:{topology.edge.http_port}"),
        BearerInterceptor(tokens.external("alice")),
    )
    stub = payments_pb2_grpc.PaymentServiceStub(channel)
    request = payments_pb2.GetPaymentRequest(payment_id=str(uuid.uuid4()))

    def refused_by_the_mesh() -> bool:
        try:
            stub.GetPayment(request, timeout=3.0)
        except grpc.RpcError as exc:
            return (exc.code(), exc.details()) == (PERMISSION_DENIED, "RBAC: access denied")
        return False

    with channel, intention_removed(mesh, consul, "payments", unknown_payment_is_404(edge)):
        wait_for(
            refused_by_the_mesh,
            timeout=20,
            what="a gRPC PERMISSION_DENIED 'RBAC: access denied' through the edge",
        )


def test_a_services_own_403_passes_unchanged(edge: httpx.Client) -> None:
    # orders' own problem (another user's orders) and users' own PERMISSION_DENIED in the
    # transcoder's JSON status (a non-admin blocking a user) are not the mesh's denials.
    orders = edge.get("/orders", params={"userId": "bob"})
    assert orders.status_code == 403, orders.text
    assert orders.headers["content-type"].startswith(PROBLEM)
    assert orders.json()["type"] != MESH_DENIAL
    users = edge.post("/users/bob:block", json={"reason": "try"})
    assert users.status_code == 403, users.text
    assert users.json()["code"] == PERMISSION_DENIED.value[0]


# --- request header limits ----------------------------------------------------------------------

HEADERS_TOO_LARGE = "/problems/request-headers-too-large"
OVERSIZED = {"x-oversized": "a" * MAX_REQUEST_HEADER_BYTES}
# Room for what is counted besides the client's own headers: the pseudo-headers (method, path,
# authority, scheme) and what Envoy adds before its filters (x-request-id, x-forwarded-*).
COUNTED_BESIDES = 400


def assert_headers_too_large(status: int, content_type: str, problem: dict) -> None:
    assert status == 431, problem
    assert content_type.startswith(PROBLEM)
    assert problem["type"] == HEADERS_TOO_LARGE
    assert problem["status"] == 431


def test_an_oversized_header_is_a_431_problem_from_the_edge_over_http1_http2_and_http3(
    mesh: Mesh, edge: httpx.Client, tokens
) -> None:
    h1 = edge.get("/orders", params={"userId": "alice"}, headers=OVERSIZED)
    assert h1.http_version == "HTTP/1.1"
    assert_headers_too_large(h1.status_code, h1.headers["content-type"], h1.json())

    topology = mesh.topology
    ca = str(edge_certs(mesh.state).ca_cert)
    headers = {"authorization": f"Bearer {tokens.external('alice')}", **OVERSIZED}
    https = f"https://{topology.bind_host}:{topology.edge.https_port}"
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=ca)) as client:
        h2 = client.get(f"{https}/orders", params={"userId": "alice"}, headers=headers)
    assert h2.http_version == "HTTP/2"
    assert_headers_too_large(h2.status_code, h2.headers["content-type"], h2.json())

    status, fields, body = h3_get_with_headers(
        topology.bind_host, topology.edge.https_port, "/orders?userId=alice", headers, ca
    )
    assert_headers_too_large(status, dict(fields)["content-type"], json.loads(body))


def test_more_header_fields_than_the_edge_takes_are_a_431_problem(edge: httpx.Client) -> None:
    many = {f"x-field-{n}": "1" for n in range(MAX_REQUEST_HEADERS)}
    resp = edge.get("/orders", params={"userId": "alice"}, headers=many)
    assert_headers_too_large(resp.status_code, resp.headers["content-type"], resp.json())


def test_headers_just_under_the_edges_limit_reach_every_service(edge: httpx.Client, tokens) -> None:
    # The token and the client's usual headers, padded to just under the limit: every service
    # (aiohttp's per-field limit, gRPC's metadata limit through the transcoder) takes them.
    authorization = {"authorization": f"Bearer {tokens.external('alice')}"}
    own = sum(len(name) + len(value) for name, value in {**edge.headers, **authorization}.items())
    name = "x-padding"
    padding = {name: "a" * (MAX_REQUEST_HEADER_BYTES - own - COUNTED_BESIDES - len(name))}
    for path, params in [
        ("/orders", {"userId": "alice"}),
        ("/users/alice", {}),
        ("/payments", {"userId": "alice"}),
        ("/notifications", {}),
    ]:
        resp = edge.get(path, params=params, headers=padding)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
