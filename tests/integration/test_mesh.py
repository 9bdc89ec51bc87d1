"""The mesh itself: mTLS identities, Consul health, intentions, and a killed service."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from mesh.components.consul import ConsulClient
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology
from tests.support import envoy_admin, intention_removed, wait_for

ORDER = {"items": [{"productId": "book", "quantity": 1}]}


def place_order(edge: httpx.Client) -> dict:
    resp = edge.post("/orders", json={"userId": "alice", **ORDER})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_orders_sidecar_presents_its_spiffe_identity(mesh: Mesh) -> None:
    instance = mesh.topology.service("orders").instances[0]
    with envoy_admin(mesh, f"{instance.id}-sidecar") as admin:
        certs = admin.get("/certs").json()["certificates"]
    uris = [
        san["uri"]
        for cert in certs
        for chain in cert["cert_chain"]
        for san in chain.get("subject_alt_names", [])
        if "uri" in san
    ]
    assert any(uri.startswith("spiffe://") and uri.endswith("/svc/orders") for uri in uris), uris


def test_edge_sidecar_has_a_healthy_mtls_endpoint_for_orders(
    mesh: Mesh, edge: httpx.Client
) -> None:
    topology = mesh.topology
    place_order(edge)
    with envoy_admin(mesh, f"{topology.edge.instances[0].id}-sidecar") as admin:
        clusters = admin.get("/clusters", params={"format": "json"}).json()["cluster_statuses"]
        stats = admin.get("/stats", params={"filter": "ssl.handshake$"}).text
    orders = [c for c in clusters if c["name"].startswith("orders.default.")]
    assert orders, [c["name"] for c in clusters]
    hosts = orders[0]["host_statuses"]
    sidecar_ports = sorted(i.sidecar.port for i in topology.service("orders").instances)
    assert sorted(h["address"]["socket_address"]["port_value"] for h in hosts) == sidecar_ports
    assert all(h["health_status"]["eds_health_status"] == "HEALTHY" for h in hosts)
    # Requests to orders left the edge sidecar through TLS handshakes (mTLS to the orders sidecar).
    handshakes = [
        int(line.rsplit(":", 1)[1])
        for line in stats.splitlines()
        if line.startswith("cluster.orders.default.")
    ]
    assert handshakes and sum(handshakes) > 0, stats


def test_consul_catalog_reports_every_orders_instance_passing(
    topology: Topology, consul: ConsulClient
) -> None:
    passing = consul.http.get("/v1/health/connect/orders", params={"passing": "1"}).json()
    assert {entry["Service"]["Service"] for entry in passing} == {"orders-sidecar-proxy"}
    destinations = sorted(entry["Service"]["Proxy"]["DestinationServiceID"] for entry in passing)
    assert destinations == sorted(i.id for i in topology.service("orders").instances)


def test_removing_the_edge_to_orders_intention_denies_and_restoring_heals(
    mesh: Mesh, edge: httpx.Client, consul: ConsulClient
) -> None:
    order = place_order(edge)

    def healed() -> bool:
        return edge.get(f"/orders/{order['id']}").status_code == 200

    with intention_removed(mesh, consul, "orders", healed):
        denied = wait_for(
            lambda: edge.get(f"/orders/{order['id']}", timeout=3.0).status_code in (403, 503),
            timeout=20,
            what="the default-deny intention to refuse edge -> orders",
        )
        assert denied


def test_killing_every_orders_instance_gives_a_fast_503_then_heals_after_start(
    mesh: Mesh, edge: httpx.Client, consul: ConsulClient
) -> None:
    order = place_order(edge)
    instances = [i.id for i in mesh.topology.service("orders").instances]
    assert mesh.kill("orders", hold=True) == instances
    try:
        # A bounded client timeout: the edge must answer, not hang, while orders is gone.
        resp = edge.get(f"/orders/{order['id']}", timeout=1.0)
        assert resp.status_code == 503, resp.text
        wait_for(
            lambda: all(consul.agent_health(i) == "critical" for i in instances),
            timeout=10,
            what="consul to mark every orders instance critical",
        )
    finally:
        mesh.start("orders", say=lambda _: None)
    assert all(consul.agent_health(i) == "passing" for i in instances)
    healed = wait_for(
        lambda: edge.get(f"/orders/{order['id']}").json() == order,
        timeout=15,
        what="orders to answer again through the edge",
    )
    assert healed


def run_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mesh.runtime.cli", *args],
        env={**os.environ, "SHOPMESH_STATE_DIR": str(mesh.state.root)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_status_lists_every_component_healthy(mesh: Mesh) -> None:
    proc = run_cli(mesh, "status")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in mesh.names():
        line = next(line for line in proc.stdout.splitlines() if line.startswith(name + " "))
        assert line.rstrip().endswith("healthy"), line


def test_second_up_says_the_mesh_is_already_running(mesh: Mesh) -> None:
    proc = run_cli(mesh, "up", "--detach")

    assert proc.returncode == 1
    assert "already running" in proc.stderr
    assert sorted(mesh.running()) == sorted(mesh.names())
