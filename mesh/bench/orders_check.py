"""After a run of POST /orders: is every accepted order PAID, and charged exactly once?"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from contracts import EventType
from mesh.bench import db
from mesh.runtime.paths import StateDir
from mesh.topology import Topology

SETTLE_S = 60.0


def orders_of_keys(topology: Topology, state: StateDir, keys: Sequence[str]) -> dict[str, str]:
    """order id -> status of the orders the run's Idempotency-Keys created."""
    rows = db.query(
        topology,
        state,
        "orders",
        "SELECT o.id::text AS id, o.status FROM idempotency_keys k "
        "JOIN orders o ON o.id = k.order_id WHERE k.key = ANY($1::text[])",
        list(keys),
    )
    return {r["id"]: r["status"] for r in rows}


def charges(topology: Topology, state: StateDir, ids: Sequence[str]) -> dict[str, int]:
    """order id -> SUCCEEDED payments of it."""
    rows = db.query(
        topology,
        state,
        "payments",
        "SELECT order_id, count(*) AS n FROM payments "
        "WHERE order_id = ANY($1::text[]) AND status = 'SUCCEEDED' GROUP BY order_id",
        list(ids),
    )
    return {r["order_id"]: r["n"] for r in rows}


def succeeded_events(topology: Topology, state: StateDir, ids: Sequence[str]) -> dict[str, int]:
    rows = db.query(
        topology,
        state,
        "payments",
        "SELECT key, count(*) AS n FROM outbox WHERE key = ANY($1::text[]) "
        "AND payload->>'type' = $2 GROUP BY key",
        list(ids),
        EventType.PAYMENT_SUCCEEDED.value,
    )
    return {r["key"]: r["n"] for r in rows}


def check(
    topology: Topology, state: StateDir, keys: Sequence[str], accepted: int
) -> dict[str, int | dict[str, int]]:
    """Waits up to SETTLE_S for the run's orders to leave their pending states, then counts."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        statuses = orders_of_keys(topology, state, keys)
        pending = [i for i, s in statuses.items() if s in ("PENDING", "PAYMENT_PENDING")]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    ids = list(statuses)
    paid = [i for i in ids if statuses[i] == "PAID"]
    charged = charges(topology, state, ids)
    events = succeeded_events(topology, state, ids)
    return {
        "accepted": accepted,
        "orders": len(ids),
        "paid": len(paid),
        "charged_once": sum(1 for i in paid if charged.get(i) == 1 and events.get(i) == 1),
        "charged_twice_or_more": sum(1 for i in ids if charged.get(i, 0) > 1),
        "not_paid": dict(Counter(s for s in statuses.values() if s != "PAID")),
    }
