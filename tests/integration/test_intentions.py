"""Intentions are enforced by the destination's sidecar on the caller's mTLS identity."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import httpx
import pytest

from mesh.components.consul import ConsulClient
from mesh.topology import Topology
from shopmesh.payments.v1 import payments_pb2

PERMISSION_DENIED = "7"
UNAUTHENTICATED = "16"


def grpc_status_as(identity: str, topology: Topology, consul: ConsulClient, tmp_path: Path) -> str:
    """Call payments.GetPayment on the payments sidecar presenting `identity`'s leaf cert."""
    leaf = consul.http.get(f"/v1/agent/connect/ca/leaf/{identity}").json()
    roots = consul.http.get("/v1/agent/connect/ca/roots").json()["Roots"]
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_text(leaf["CertPEM"])
    key.write_text(leaf["PrivateKeyPEM"])
    ca.write_text("".join(root["RootCert"] for root in roots))
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # Connect certificates carry a SPIFFE URI, not a DNS name
    context.load_cert_chain(str(cert), str(key))

    message = payments_pb2.GetPaymentRequest(payment_id=str(uuid.uuid4())).SerializeToString()
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    port = topology.service("payments").instances[0].sidecar.port
    with httpx.Client(http1=False, http2=True, verify=context, timeout=5.0) as client:
        resp = client.post(
            f"https://127.0.0.1:{port}/shopmesh.payments.v1.PaymentService/GetPayment",
            content=frame,
            headers={"content-type": "application/grpc", "te": "trailers"},
        )
    assert resp.http_version == "HTTP/2"
    return resp.headers.get("grpc-status", "")


def test_orders_passes_the_mesh_but_payments_itself_refuses_a_call_without_a_token(
    topology: Topology, consul: ConsulClient, tmp_path: Path
) -> None:
    # The intention lets orders through; payments verifies the internal JWT itself.
    assert grpc_status_as("orders", topology, consul, tmp_path) == UNAUTHENTICATED


@pytest.mark.parametrize("caller", ["users", "edge-intruder"])
def test_a_caller_no_intention_allows_is_refused(
    topology: Topology, consul: ConsulClient, tmp_path: Path, caller: str
) -> None:
    assert grpc_status_as(caller, topology, consul, tmp_path) == PERMISSION_DENIED
