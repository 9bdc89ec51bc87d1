"""How each edge reaches its services through the real mesh: over one HTTP/2 connection to its
sidecar (but for a service with a WebSocket route), and with at most 32 requests in flight from
its sidecar to a service, the rest waiting in the sidecar (mesh/consul/config-entries/
service-defaults-edge.hcl, as Consul gives it to the sidecar's Envoy)."""

from __future__ import annotations

from typing import Any

import httpx

from mesh.components.edge import cluster_name
from mesh.runtime.supervisor import Mesh
from tests.support import envoy_admin, envoy_stat

QUEUED = {"max_connections": 32, "max_pending_requests": 1024, "max_requests": 32}
WEBSOCKETS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024}


def sidecar_clusters(mesh: Mesh, process: str) -> dict[str, dict[str, Any]]:
    """The sidecar's clusters of the mesh's services, by service name."""
    with envoy_admin(mesh, process) as admin:
        dump = admin.get("/config_dump", params={"resource": "dynamic_active_clusters"}).json()
    clusters = [entry["cluster"] for entry in dump["configs"]]
    return {c["name"].split(".", 1)[0]: c for c in clusters if c["name"].endswith(".consul")}


def thresholds(cluster: dict[str, Any]) -> dict[str, int]:
    (default,) = cluster["circuit_breakers"]["thresholds"]
    return {key: default[key] for key in QUEUED}


def test_each_edge_sidecar_lets_32_requests_at_once_to_a_service_and_1024_websockets(
    mesh: Mesh,
) -> None:
    for edge in mesh.topology.edge.instances:
        clusters = sidecar_clusters(mesh, f"{edge.id}-sidecar")
        assert clusters.keys() == {u.service for u in edge.upstreams}, edge.id
        for service, cluster in clusters.items():
            expected = WEBSOCKETS if service == "notifications" else QUEUED
            assert thresholds(cluster) == expected, (edge.id, service)


def test_the_edges_reach_orders_over_http2_and_notifications_over_http1(
    mesh: Mesh, edge: httpx.Client
) -> None:
    edges = [e.id for e in mesh.topology.edge.instances]

    def edge_stat(service: str, stat: str) -> int:
        return sum(envoy_stat(mesh, e, cluster_name(service), stat) for e in edges)

    before = {s: edge_stat(s, "upstream_rq_total") for s in ("orders", "notifications")}
    for path in ("/orders", "/notifications"):
        answer = edge.get(path, params={"userId": "alice"})
        assert answer.status_code == 200, (path, answer.text)
    assert edge_stat("orders", "upstream_rq_total") >= before["orders"] + 1
    assert edge_stat("notifications", "upstream_rq_total") >= before["notifications"] + 1
    assert edge_stat("orders", "upstream_cx_http1_total") == 0, edges
    assert edge_stat("orders", "upstream_cx_http2_total") >= 1, edges
    assert edge_stat("notifications", "upstream_cx_http2_total") == 0, edges
