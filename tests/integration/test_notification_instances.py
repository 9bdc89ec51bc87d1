"""Two notifications instances share the `notifications` consumer group, so each consumes only
some of the events; a user's sockets get every one of their events on whichever instance they
are connected to (services/notifications/live.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from websockets.sync.client import ClientConnection, connect

from mesh.runtime import kafka
from mesh.runtime.supervisor import Mesh
from tests.integration.test_messaging_flow import orders_client, place
from tests.support import wait_for

ORDERS = 8
STATUS_CHANGED = "shopmesh.order.status_changed.v1"


@contextmanager
def sockets_on_every_instance(mesh: Mesh, tokens, user: str) -> Iterator[list[ClientConnection]]:
    """One socket of `user` straight to each notifications instance (its internal token)."""
    headers = {"Authorization": f"Bearer {tokens.internal(user)}"}
    with ExitStack() as stack:
        sockets = []
        for instance in mesh.topology.service("notifications").instances:
            url = f"ws://{mesh.topology.bind_host}:{instance.port}/notifications/ws"
            ws = stack.enter_context(connect(url, additional_headers=headers, open_timeout=10))
            assert json.loads(ws.recv(timeout=10)) == {"type": "hello", "userId": user}
            sockets.append(ws)
        yield sockets


def paid_orders_seen(ws: ClientConnection, expected: set[str], timeout: float) -> set[str]:
    """The orders of `expected` whose PAID status change arrived on `ws` within `timeout`."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != expected and time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        except TimeoutError:
            break
        data = message.get("data", {})
        if message.get("type") == STATUS_CHANGED and data.get("status") == "PAID":
            seen.add(data["orderId"])
    return seen


def test_every_event_reaches_the_users_sockets_on_every_notifications_instance(
    mesh: Mesh, tokens, fresh_user
) -> None:
    instances = sorted(i.id for i in mesh.topology.service("notifications").instances)
    assert len(instances) >= 2, "the topology runs one notifications instance"
    wait_for(
        lambda: (
            kafka.group_client_ids(mesh.topology, mesh.placement, mesh.state, "notifications")
            == instances
        ),
        timeout=30,
        what="every notifications instance to be a member of the notifications group",
    )
    user = fresh_user().id
    with sockets_on_every_instance(mesh, tokens, user) as sockets:
        with orders_client(mesh, tokens, user) as client:
            ids = {place(client, user, respond_async=False)["id"] for _ in range(ORDERS)}
        for ws, instance in zip(sockets, instances, strict=True):
            seen = paid_orders_seen(ws, ids, timeout=30)
            assert seen == ids, f"{instance} missed {sorted(ids - seen)}"
