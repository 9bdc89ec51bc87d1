"""Killing processes: gRPC health in Consul, and the mesh surviving a dead Consul."""

from __future__ import annotations

import httpx
import pytest

from mesh.runtime.consul import ConsulClient
from mesh.runtime.supervisor import Mesh
from tests.support import wait_for

ORDER = {"userId": "alice", "items": [{"productId": "book", "quantity": 1}]}


def grpc_check_status(consul: ConsulClient, service: str) -> str:
    checks = consul.http.get(f"/v1/health/checks/{service}").json()
    grpc_checks = [c for c in checks if c["Type"] == "grpc"]
    assert grpc_checks, f"{service} has no gRPC health check: {checks}"
    return grpc_checks[0]["Status"]


@pytest.mark.parametrize("service", ["users", "payments"])
def test_grpc_health_check_passes_and_a_killed_server_turns_critical(
    mesh: Mesh, consul: ConsulClient, service: str
) -> None:
    assert grpc_check_status(consul, service) == "passing"
    mesh.kill(service)
    try:
        wait_for(
            lambda: grpc_check_status(consul, service) == "critical",
            timeout=10,
            what=f"consul to mark {service} critical",
        )
    finally:
        mesh.start(service, say=lambda _: None)
    assert grpc_check_status(consul, service) == "passing"


def test_orders_keep_flowing_while_consul_is_down_and_everything_reregisters_after(
    mesh: Mesh, edge: httpx.Client, consul: ConsulClient
) -> None:
    before = {name: run.pid for name, run in mesh.running().items() if name != "consul"}
    mesh.kill("consul")
    try:
        statuses = [edge.post("/orders", json=ORDER).json()["status"] for _ in range(5)]
        assert statuses == ["PAID"] * 5, "sidecars keep their last configuration without Consul"
    finally:
        mesh.start("consul", say=lambda _: None)

    ids = [i.id for i in mesh.topology.instances()] + [mesh.topology.edge.id]
    for service_id in ids:
        for checked in (service_id, f"{service_id}-sidecar-proxy"):
            wait_for(
                lambda c=checked: consul.agent_health(c) == "passing",
                timeout=30,
                what=f"{checked} to be registered and passing again",
            )
    after = {name: run.pid for name, run in mesh.running().items() if name != "consul"}
    assert after == before, "nothing was restarted to recover"
    wait_for(
        lambda: edge.post("/orders", json=ORDER).json()["status"] == "PAID",
        timeout=30,
        what="orders to be placed after consul returned",
    )
