"""Prometheus scrapes every service (through Consul), every Envoy and Consul, and the metrics
move with traffic."""

from __future__ import annotations

import httpx

from mesh.runtime.supervisor import Mesh
from tests.support import wait_for


def prometheus(mesh: Mesh) -> httpx.Client:
    base = f"http://{mesh.topology.bind_host}:{mesh.topology.prometheus_port}"
    return httpx.Client(base_url=base, timeout=5.0)


def query(mesh: Mesh, promql: str) -> float:
    with prometheus(mesh) as client:
        result = client.get("/api/v1/query", params={"query": promql}).json()["data"]["result"]
    return sum(float(sample["value"][1]) for sample in result)


def test_every_target_is_scraped_and_up(mesh: Mesh) -> None:
    topology = mesh.topology
    expected = {i.id for i in topology.instances()}
    expected |= {f"{i.id}-sidecar" for i in topology.instances()}
    expected |= {f"{topology.edge.id}-sidecar", topology.edge.id}

    def up_instances() -> set[str]:
        with prometheus(mesh) as client:
            targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
        return {t["labels"]["instance"] for t in targets if t["health"] == "up"}

    up = wait_for(
        lambda: expected <= up_instances() and up_instances(),
        timeout=60,
        what="every service, sidecar and the edge to be scraped and up",
    )
    assert expected <= up
    assert query(mesh, 'up{job="consul"}') == 1


def test_request_metrics_move_with_traffic(mesh: Mesh, edge: httpx.Client) -> None:
    orders = 'sum(shopmesh_requests_total{service="orders", route="/orders", method="POST"})'
    payments = 'sum(shopmesh_requests_total{service="payments", status="OK"})'
    gateway = 'sum(envoy_http_downstream_rq_total{job="edge"})'
    before = {name: query(mesh, promql) for name, promql in
              {"orders": orders, "payments": payments, "gateway": gateway}.items()}  # fmt: skip

    resp = edge.post("/orders", json={"userId": "alice",
                                      "items": [{"productId": "book", "quantity": 1}]})  # fmt: skip
    assert resp.status_code == 201

    wait_for(lambda: query(mesh, orders) > before["orders"], timeout=30,
             what="orders' request counter to rise in Prometheus")  # fmt: skip
    wait_for(lambda: query(mesh, payments) > before["payments"], timeout=30,
             what="payments' OK counter to rise in Prometheus")  # fmt: skip
    wait_for(lambda: query(mesh, gateway) > before["gateway"], timeout=30,
             what="the edge's request counter to rise in Prometheus")  # fmt: skip


def test_the_alert_and_recording_rules_are_loaded(mesh: Mesh) -> None:
    with prometheus(mesh) as client:
        groups = client.get("/api/v1/rules").json()["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"GatewayLatencyHigh", "GatewayErrorRateHigh", "InstanceDown"} <= names
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"])
