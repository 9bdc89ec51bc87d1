"""Killing processes: the gRPC services' health in Consul, the mesh surviving a dead Consul agent
(its servers: test_consul_servers.py), and orders surviving dead payments."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mesh.components.consul import ConsulClient
from mesh.runtime.supervisor import Mesh
from tests.chaos.order_load import USERS, OrderLoad, assert_every_order_paid_once
from tests.integration.test_messaging_flow import WORKERS, assert_charged_once, wait_all
from tests.integration.test_messaging_flow import workers as workers
from tests.support import FreshClient, wait_for


def instance_checks(consul: ConsulClient, service: str) -> dict[str, str]:
    """instance -> status of the service's own /health checks (not its sidecars')."""
    checks = consul.http.get(f"/v1/health/checks/{service}").json()
    own = {c["ServiceID"]: c["Status"] for c in checks if c["Type"] == "http"}
    assert own, f"{service} has no /health check: {checks}"
    return own


def check_status(consul: ConsulClient, service: str) -> str:
    return next(iter(instance_checks(consul, service).values()))


@pytest.mark.parametrize("service", ["users", "payments"])
def test_a_grpc_service_health_check_passes_and_a_killed_server_turns_critical(
    mesh: Mesh, consul: ConsulClient, service: str
) -> None:
    assert check_status(consul, service) == "passing"
    mesh.kill(service, hold=True)
    try:
        wait_for(
            lambda: check_status(consul, service) == "critical",
            timeout=10,
            what=f"consul to mark {service} critical",
        )
    finally:
        mesh.start(service, say=lambda _: None)
    assert check_status(consul, service) == "passing"


@pytest.mark.usefixtures("workers")
def test_orders_keep_flowing_while_the_consul_agent_is_down_and_everything_reregisters_after(
    mesh: Mesh, edge_as_fresh: Callable[[], FreshClient], consul: ConsulClient
) -> None:
    """The host's client agent (`consul`) SIGKILLed for about 10 s under orders at 10/s: the
    sidecars keep their last xDS, so nothing fails while it is down. Restarted, it restores the
    registrations from its data dir with every check critical until it has run them again
    (docs/failure-modes.md): those seconds may fail orders, counted, not bounded."""
    clients = [edge_as_fresh() for _ in range(USERS)]
    before = {name: run.pid for name, run in mesh.running().items() if name != "consul"}
    ids = [i.id for i in mesh.topology.instances()] + [e.id for e in mesh.topology.edge.instances]
    with OrderLoad(clients) as load:
        load.wait_answered(20, what="orders before the fault")
        assert mesh.kill("consul", hold=True) == ["consul"]
        load.wait_answered(load.answered() + 100, what="orders while the agent is down")
        errors_while_down = load.errors_so_far()
        restarted_at = time.monotonic()
        mesh.start("consul", say=lambda _: None)
        for service_id in ids:
            for checked in (service_id, f"{service_id}-sidecar-proxy"):
                wait_for(
                    lambda c=checked: consul.agent_health(c) == "passing",
                    timeout=30,
                    what=f"{checked} to be registered and passing again",
                )
        passing_after = time.monotonic() - restarted_at
        load.wait_answered(load.answered() + 100, what="orders after the agent returned")
    answers = load.stop()
    print(
        f"consul agent killed: {errors_while_down} errors while it was down; every check "
        f"passing {passing_after:.1f}s after its restart; in all {answers.summary()}"
    )
    assert errors_while_down == 0, answers.summary()
    after = {name: run.pid for name, run in mesh.running().items() if name != "consul"}
    assert after == before, "nothing was restarted to recover"
    assert_every_order_paid_once(mesh, answers)


def payments_checks_passing(consul: ConsulClient, instances: list[str]) -> bool:
    checks = instance_checks(consul, "payments")
    return all(checks.get(i) == "passing" for i in instances)


@pytest.mark.usefixtures("workers")
def test_orders_placed_while_every_payments_process_is_dead_are_paid_once_by_the_workers(
    mesh: Mesh, edge_as, consul: ConsulClient
) -> None:
    bob = edge_as("bob")  # not alice: her per-minute edge limit is shared with the other tests
    order = {"userId": "bob", "items": [{"productId": "book", "quantity": 1}]}
    instances = mesh.resolve("payments")
    assert sorted(mesh.kill("payments", hold=True)) == sorted(instances)
    try:
        # Each synchronous attempt fails within orders' 2.5 s payments deadline (the edge's
        # route allows 10 s). The order was stored with its task queued: it answers
        # PAYMENT_PENDING, or PAID if a worker charged it before the attempt gave up.
        deferred = [bob.post("/orders", json=order, timeout=15.0) for _ in range(4)]
        assert [r.status_code for r in deferred] == [201] * 4, [r.text for r in deferred]
        reasons = [r.json().get("statusReason") or r.json()["status"] for r in deferred]
        assert all(r == "PAID" or r.startswith("payments unavailable (") for r in reasons), reasons
        queued = bob.post("/orders", json=order, headers={"Prefer": "respond-async"})
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "PAYMENT_PENDING"
        ids = [r.json()["id"] for r in [*deferred, queued]]

        # The workers charge on the payments database and relay its outbox themselves.
        wait_all(mesh, ids, "PAID", timeout=60)
        assert not set(instances) & set(mesh.running()), "payments stayed dead throughout"
        per_worker = assert_charged_once(mesh, ids)
        assert set(per_worker) <= set(WORKERS), per_worker
        print(f"orders with payments dead: {set(reasons)}; charged per worker {dict(per_worker)}")
    finally:
        mesh.start("payments", say=lambda _: None)

    wait_for(lambda: payments_checks_passing(consul, instances), timeout=30,
             what="both payments instances to pass their gRPC health checks again")  # fmt: skip
    # The orders sidecar may have ejected the dead endpoints for a while (outlier detection).
    wait_for(lambda: bob.post("/orders", json=order).json().get("status") == "PAID", timeout=30,
             what="orders to be paid synchronously again by the restarted payments",
             interval=1.0)  # fmt: skip
    for order_id in ids:
        placed = bob.get(f"/orders/{order_id}").json()
        assert placed["status"] == "PAID", placed
        payment = bob.get(f"/payments/{placed['paymentId']}")
        assert payment.status_code == 200, payment.text
        assert payment.json()["orderId"] == order_id
        assert payment.json()["status"] == "PAYMENT_STATUS_SUCCEEDED"
