"""A real fault makes its alert pending in the native Prometheus."""

from __future__ import annotations

import httpx

from mesh.runtime.supervisor import Mesh
from tests.integration.test_observability import prometheus, query
from tests.support import wait_for


def alert_states(mesh: Mesh, name: str) -> dict[str, str]:
    """instance -> state (pending or firing) of every active alert called `name`."""
    with prometheus(mesh) as client:
        alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"].get("instance", ""): a["state"] for a in alerts
            if a["labels"]["alertname"] == name}  # fmt: skip


def test_killing_every_payments_instance_makes_instance_down_pending(
    mesh: Mesh, edge: httpx.Client
) -> None:
    instances = {i.id for i in mesh.topology.service("payments").instances}
    up = 'sum(up{job="services", service="payments"})'
    wait_for(lambda: query(mesh, up) == len(instances), timeout=30,
             what="every payments instance to be scraped and up first")  # fmt: skip
    assert not instances & set(alert_states(mesh, "InstanceDown"))

    mesh.kill("payments")
    try:
        # The killed instances stay in Consul's catalog (critical, not deregistered), so they
        # stay targets, as with consul_sd_configs, and their scrapes fail.
        states = wait_for(
            lambda: (s := alert_states(mesh, "InstanceDown")) and instances <= set(s) and s,
            timeout=30,
            what="InstanceDown to be pending (or firing) for both payments instances",
        )
        assert {states[i] for i in instances} <= {"pending", "firing"}
    finally:
        mesh.start("payments", say=lambda _: None)

    wait_for(lambda: query(mesh, up) == len(instances), timeout=30,
             what="both payments instances to be scraped and up again")  # fmt: skip
    wait_for(lambda: not instances & set(alert_states(mesh, "InstanceDown")), timeout=30,
             what="InstanceDown to resolve for the restarted payments instances")  # fmt: skip
    order = {"userId": "alice", "items": [{"productId": "book", "quantity": 1}]}
    wait_for(lambda: edge.post("/orders", json=order).json().get("status") == "PAID", timeout=30,
             what="orders to be paid again through the restarted payments")  # fmt: skip
