"""Order placed → its PAID notification on the user's WebSocket, through the edge: a probe,
not a load generator (one order at a time, as one bench user).

Each order is placed with POST /orders on the edge's plain listener while the same user's
WebSocket (`/notifications/ws`, also through the edge) is open; the time is from sending the
POST to the order's `status_changed` message with status PAID, and from the 201 to it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from contracts import EventType
from mesh.bench import accounts, slots, targets
from mesh.bench.scenarios import DEFAULT_USERS, SOURCES
from mesh.runtime.paths import StateDir
from mesh.topology import Topology

WAIT_S = 15.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def summary(values_s: list[float]) -> dict[str, float]:
    return {
        "p50_ms": 1000 * percentile(values_s, 0.50),
        "p99_ms": 1000 * percentile(values_s, 0.99),
        "max_ms": 1000 * max(values_s, default=0.0),
    }


def _paid_at(ws: ClientConnection, order_id: str) -> float | None:
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return None
        data = message.get("data") or {}
        if (
            message.get("type") == EventType.ORDER_STATUS_CHANGED
            and data.get("orderId") == order_id
            and data.get("status") == "PAID"
        ):
            return time.perf_counter()
    return None


def probe(topology: Topology, state: StateDir, orders: int) -> dict[str, Any]:
    window = topology.edge.per_user_limit.per_seconds
    users = accounts.ensure_users(topology, state, DEFAULT_USERS)
    start, half = slots.next_start(time.time(), slots.longest_short_run_s(window), window)
    user = slots.share(users, half)[0]
    token = accounts.tokens(topology, state, [user], targets.sources(SOURCES))[user]
    edge = f"{topology.bind_host}:{topology.edge.http_port}"
    time.sleep(max(start - time.time(), 0.0))
    placed_to_paid, created_to_paid, missing = [], [], 0
    ws_url = f"ws://{edge}/notifications/ws?access_token={token}"
    with (
        connect(ws_url, open_timeout=10) as ws,
        httpx.Client(base_url=f"http://{edge}", headers=targets.bearer(token)) as client,
    ):
        ws.recv(timeout=10)  # the hello
        for _ in range(orders):
            sent = time.perf_counter()
            response = client.post("/orders", json={"userId": user, "items": accounts.ITEMS})
            created = time.perf_counter()
            paid = _paid_at(ws, response.json()["id"]) if response.status_code == 201 else None
            if paid is None:
                missing += 1
                continue
            placed_to_paid.append(paid - sent)
            created_to_paid.append(paid - created)
    return {
        "orders": orders,
        "missing": missing,
        "placed_to_paid": summary(placed_to_paid),
        "created_to_paid": summary(created_to_paid),
    }
