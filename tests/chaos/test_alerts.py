"""Faults as the native Prometheus sees them: a killed instance is down and its alert pending,
a deregistered one is no target any more (discovery through Consul)."""

from __future__ import annotations

import httpx

from mesh.components.consul import ConsulClient
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

    mesh.kill("payments", hold=True)
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


def target_instances(mesh: Mesh) -> set[str]:
    with prometheus(mesh) as client:
        targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
    return {t["labels"]["instance"] for t in targets}


def test_an_instance_that_leaves_consul_stops_being_a_target(
    mesh: Mesh, consul: ConsulClient
) -> None:
    instance = mesh.topology.service("payments").instances[-1].id
    mine = {instance, f"{instance}-sidecar"}
    wait_for(lambda: mine <= target_instances(mesh), timeout=30,
             what=f"{instance} and its sidecar to be targets first")  # fmt: skip

    consul.deregister(instance)  # its sidecar's registration goes with it
    try:
        wait_for(lambda: not mine & target_instances(mesh), timeout=30,
                 what=f"{instance} and its sidecar to leave Prometheus' targets")  # fmt: skip
    finally:
        # The process registers once, at start: restart it (and its sidecar) to come back.
        for name in (instance, f"{instance}-sidecar"):
            mesh.kill(name)
            mesh.start(name, say=lambda _: None)

    wait_for(lambda: mine <= target_instances(mesh), timeout=30,
             what=f"{instance} and its sidecar to be discovered again")  # fmt: skip
    up = f'sum(up{{instance=~"{instance}|{instance}-sidecar"}})'
    wait_for(lambda: query(mesh, up) == 2, timeout=30,
             what=f"{instance} and its sidecar to be scraped and up again")  # fmt: skip
