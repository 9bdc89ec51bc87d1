"""One instance of a service SIGKILLed: the other instance carries the traffic and the watchdog
brings the dead one back. While orders flow through the edge, at most 1 % of them fail (the
no-single-point-of-failure issue's target), and every accepted order is paid once; the clients
of a dead notifications instance find what they missed in the history."""

from __future__ import annotations

import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from mesh.components.consul import ConsulClient
from mesh.runtime.supervisor import Mesh
from tests.chaos.order_load import USERS, OrderLoad, assert_every_order_paid_once
from tests.integration.test_messaging_flow import orders_client, place
from tests.integration.test_messaging_flow import workers as workers
from tests.integration.test_notification_instances import (
    STATUS_CHANGED,
    paid_orders_seen,
    sockets_on_every_instance,
)
from tests.support import wait_for

WARM_UP_ORDERS = 30
AFTER_RECOVERY_ORDERS = 50
MAX_ERROR_RATIO = 0.01


@pytest.mark.usefixtures("workers")
@pytest.mark.parametrize("victim", ["orders-1", "auth-1", "users-1"])
def test_orders_keep_flowing_while_one_instance_is_killed_and_comes_back(
    mesh: Mesh, consul: ConsulClient, edge_as_fresh, victim: str
) -> None:
    before = mesh.running()[victim].pid
    with OrderLoad([edge_as_fresh() for _ in range(USERS)]) as load:
        load.wait_answered(WARM_UP_ORDERS, what="orders to flow")
        killed_at = time.monotonic()
        assert mesh.kill(victim) == [victim]
        wait_for(
            lambda: (run := mesh.running().get(victim)) is not None and run.pid != before,
            timeout=60,
            what=f"the watchdog to start {victim} again",
        )
        wait_for(
            lambda: consul.agent_health(victim) == "passing",
            timeout=60,
            what=f"{victim} to pass its health check again",
        )
        back_after = time.monotonic() - killed_at
        load.wait_answered(load.answered() + AFTER_RECOVERY_ORDERS, what="orders after it")
        answers = load.stop()
    print(f"{victim} killed, back after {back_after:.1f}s: {answers.summary()}")
    assert answers.errors <= MAX_ERROR_RATIO * answers.total, answers.summary()
    assert_every_order_paid_once(mesh, answers)


def test_a_killed_notifications_instances_clients_find_what_they_missed_after_reconnecting(
    mesh: Mesh, consul: ConsulClient, tokens, fresh_user
) -> None:
    victim = mesh.topology.service("notifications").instances[0]
    user = fresh_user().id
    with sockets_on_every_instance(mesh, tokens, user) as sockets:
        on_victim, on_survivor = sockets[0], sockets[1]
        assert mesh.kill(victim.id) == [victim.id]
        with pytest.raises(ConnectionClosed):
            on_victim.recv(timeout=10)
        with orders_client(mesh, tokens, user) as client:
            ids = {place(client, user, respond_async=False)["id"] for _ in range(4)}
        # The victim's partitions move to the survivor once the group sees the victim gone.
        assert paid_orders_seen(on_survivor, ids, timeout=60) == ids
    wait_for(lambda: consul.agent_health(victim.id) == "passing", timeout=60,
             what=f"the watchdog to bring {victim.id} back")  # fmt: skip
    history = httpx.get(
        f"http://{mesh.topology.bind_host}:{victim.port}/notifications",
        headers={"Authorization": f"Bearer {tokens.internal(user)}"},
        params={"limit": 100},
        timeout=10,
    )
    assert history.status_code == 200, history.text
    paid = {
        n["data"]["orderId"]
        for n in history.json()
        if n["type"] == STATUS_CHANGED and n["data"].get("status") == "PAID"
    }
    assert paid == ids
