"""The payment workers stay in their consumer group through crashes: a worker SIGKILLed comes
back by itself (the watchdog), and after a broker (the group's coordinator) or the whole Kafka
cluster is killed and restarted both workers are members again within 30 s, with nobody
starting a worker by hand, and the tasks queued meanwhile are done once."""

from __future__ import annotations

import time

from mesh.runtime import kafka
from mesh.runtime.supervisor import Mesh
from mesh.topology import KafkaNode
from tests.integration.test_messaging_flow import (
    WORKERS,
    assert_charged_once,
    orders_client,
    place,
    wait_all,
)
from tests.support import wait_for

GROUP = "payment-workers"
REJOIN_S = 30


def not_members(mesh: Mesh) -> list[str]:
    """Why each worker is not (yet) a member, by its own account and the coordinator's; one
    member per worker, no stale one left."""
    reasons = [f"{name}: {why}" for name in WORKERS if (why := mesh.spec(name).ready())]
    members = kafka.group_client_ids(mesh.topology, mesh.placement, mesh.state, GROUP)
    if members != sorted(WORKERS):
        reasons.append(f"the coordinator lists {members}")
    return reasons


def assert_both_workers_rejoin(mesh: Mesh, since: float) -> float:
    last: list[str] = []

    def rejoined() -> bool:
        nonlocal last
        try:
            last = not_members(mesh)
        except Exception as exc:  # the cluster may still be electing leaders
            last = [f"group not readable: {exc!r}"]
        return not last

    wait_for(rejoined, timeout=REJOIN_S, what=f"both workers to be members of {GROUP}",
             interval=0.5)  # fmt: skip
    return time.monotonic() - since


def assert_queued_orders_are_paid_once(mesh: Mesh, tokens, n: int = 6) -> None:
    with orders_client(mesh, tokens, "bob") as client:
        ids = [place(client, "bob", respond_async=True)["id"] for _ in range(n)]
    wait_all(mesh, ids, "PAID", timeout=60)
    assert_charged_once(mesh, ids)


def test_a_killed_worker_is_restarted_and_both_are_members_again_within_30s(
    mesh: Mesh, tokens
) -> None:
    assert not not_members(mesh)
    before = mesh.running()[WORKERS[0]].pid
    killed_at = time.monotonic()
    assert mesh.kill(WORKERS[0]) == [WORKERS[0]]
    took = assert_both_workers_rejoin(mesh, killed_at)
    assert mesh.running()[WORKERS[0]].pid != before, "the watchdog started a new process"
    assert mesh.restarts()[WORKERS[0]] >= 1
    print(f"{WORKERS[0]} killed: both workers members again after {took:.1f}s")
    assert_queued_orders_are_paid_once(mesh, tokens)


def test_after_the_groups_coordinator_is_killed_and_restarted_both_workers_are_members(
    mesh: Mesh, tokens
) -> None:
    def coordinator_now() -> KafkaNode:
        return kafka.group_coordinator(mesh.topology, mesh.placement, mesh.state, GROUP)

    coordinator = coordinator_now()
    workers_before = {name: mesh.running()[name].pid for name in WORKERS}
    assert mesh.kill(coordinator.name, hold=True) == [coordinator.name]
    try:
        wait_for(lambda: coordinator_now() != coordinator,
                 timeout=30, what="another node to coordinate the group", interval=0.5)  # fmt: skip
    finally:
        restarted_at = time.monotonic()
        mesh.start(coordinator.name, say=lambda _: None)
    took = assert_both_workers_rejoin(mesh, restarted_at)
    assert {name: mesh.running()[name].pid for name in WORKERS} == workers_before
    print(f"coordinator {coordinator.name} restarted: both workers members after {took:.1f}s")
    assert_queued_orders_are_paid_once(mesh, tokens)


def test_after_the_whole_kafka_cluster_restarts_both_workers_are_members_again(
    mesh: Mesh, tokens
) -> None:
    workers_before = {name: mesh.running()[name].pid for name in WORKERS}
    killed = mesh.kill("kafka", hold=True)
    assert sorted(killed) == sorted(node.name for node in mesh.topology.kafka.nodes)
    restarted_at = time.monotonic()
    for name in killed:
        mesh.start(name, say=lambda _: None)
    took = assert_both_workers_rejoin(mesh, restarted_at)
    assert {name: mesh.running()[name].pid for name in WORKERS} == workers_before
    print(f"every broker restarted: both workers members again after {took:.1f}s")
    assert_queued_orders_are_paid_once(mesh, tokens)
