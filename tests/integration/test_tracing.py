"""Distributed tracing: one order through the edge is one trace in Jaeger, from the edge's Envoy
through the sidecars and services to the Kafka consumers, with correct parent links."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from mesh.runtime import jaeger
from mesh.runtime.paths import REPO_ROOT
from mesh.runtime.trace import JaegerQuery, TraceNotFound
from mesh.topology import Topology
from tests.support import wait_for

ITEMS = [{"productId": "book", "quantity": 1}]
SPAN_TIMEOUT_S = 60.0  # SDKs and Envoys export in batches every few seconds

# The edge samples only part of the requests (tracing.sample_percent): a client forces a trace.
FORCE_TRACE = {"x-client-trace-id": "test-tracing"}


@pytest.fixture(scope="module")
def jaeger_query(topology: Topology) -> Iterator[JaegerQuery]:
    query = JaegerQuery(jaeger.query_url(topology))
    yield query
    query.close()


class Trace:
    """One trace of Jaeger's JSON, with the questions the tests ask of it."""

    def __init__(self, raw: dict) -> None:
        self.id: str = raw["traceID"]
        self.spans: list[dict] = raw["spans"]
        self._services = {pid: p["serviceName"] for pid, p in raw["processes"].items()}

    def service(self, span: dict) -> str:
        return self._services[span["processID"]]

    def services(self) -> set[str]:
        return {self.service(span) for span in self.spans}

    @staticmethod
    def tag(span: dict, key: str) -> object:
        return next((t["value"] for t in span.get("tags") or [] if t["key"] == key), None)

    @staticmethod
    def parent(span: dict) -> str | None:
        refs = span.get("references") or []
        return refs[0]["spanID"] if refs else None

    def find(self, service: str, kind: str, topic: str | None = None) -> list[dict]:
        return [
            span
            for span in self.spans
            if self.service(span) == service
            and self.tag(span, "span.kind") == kind
            and (topic is None or self.tag(span, "messaging.destination.name") == topic)
        ]

    def roots(self) -> list[dict]:
        ids = {span["spanID"] for span in self.spans}
        return [span for span in self.spans if self.parent(span) not in ids]


# Services whose spans one respond-async order's trace holds: the edge's Envoy, the edge's
# and orders' sidecars, orders (its request and its outbox relay's publish to payment-tasks),
# a payment worker (consuming the task) and notifications (consuming the order and payment
# events). The worker's payment event is published by whichever relay on the payments database
# holds its lock: the payments service's or a worker's.
EXPECTED = {
    "edge",
    "edge-sidecar",
    "orders-sidecar",
    "orders",
    "payments-worker",
    "notifications",
}
PAYMENT_RELAYS = ("payments", "payments-worker")


# The services of a request's way in: the edge, its sidecar, orders' sidecar, orders.
REQUEST_PATH = {"edge", "edge-sidecar", "orders-sidecar", "orders"}


def payment_publishes(trace: Trace) -> list[dict]:
    return [s for r in PAYMENT_RELAYS for s in trace.find(r, "producer", "payment-events")]


def missing(trace: Trace) -> list[str]:
    """What the order's trace does not hold yet of the services and Kafka hops expected."""
    gaps = sorted(EXPECTED - trace.services())
    hops = {
        "orders publish to payment-tasks": trace.find("orders", "producer", "payment-tasks"),
        "a worker consuming payment-tasks": trace.find(
            "payments-worker", "consumer", "payment-tasks"
        ),
        "the payment event published": payment_publishes(trace),
        "orders consuming the payment event": trace.find("orders", "consumer", "payment-events"),
        "notifications consuming": trace.find("notifications", "consumer"),
    }
    gaps += [hop for hop, spans in hops.items() if not spans]
    # Every process flushes spans on its own timer; until all have, an orphan looks like a root.
    if len(trace.roots()) > 1:
        gaps.append(f"the parents of {len(trace.roots()) - 1} spans besides the root")
    return gaps


def test_one_async_order_is_one_trace_from_the_edge_to_every_consumer(
    edge: httpx.Client, jaeger_query: JaegerQuery
) -> None:
    resp = edge.post(
        "/orders",
        json={"userId": "alice", "items": ITEMS},
        headers={"Prefer": "respond-async", **FORCE_TRACE},
    )
    assert resp.status_code == 202, resp.text
    order_id = resp.json()["id"]
    wait_for(
        lambda: edge.get(f"/orders/{order_id}").json()["status"] == "PAID",
        timeout=60,
        what=f"order {order_id} to be paid by a payment worker",
        interval=0.5,
    )

    gaps: list[str] = ["no trace yet"]

    def complete() -> Trace | None:
        found = jaeger_query.traces_of_order(order_id)
        if not found:
            return None
        trace = Trace(found[0])
        gaps[:] = missing(trace)
        return None if gaps else trace

    try:
        trace = wait_for(complete, timeout=SPAN_TIMEOUT_S, what=f"the trace of order {order_id}",
                         interval=1.0)  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still missing: {', '.join(gaps)}") from None

    # One root, the edge's span: every other span's parent is in the trace.
    (root,) = trace.roots()
    assert (trace.service(root), root["operationName"]) == ("edge", "orders /orders")
    by_id = {span["spanID"]: span for span in trace.spans}
    (publish,) = trace.find("orders", "producer", "payment-tasks")
    consumes = trace.find("payments-worker", "consumer", "payment-tasks")
    assert consumes, "no payment worker consumed the task"
    for consume in consumes:
        assert trace.parent(consume) == publish["spanID"]
    # The worker's payment event comes back to orders (the order becomes PAID) the same way.
    published = {span["spanID"] for span in payment_publishes(trace)}
    for consume in trace.find("orders", "consumer", "payment-events"):
        assert trace.parent(consume) in published

    # The request went edge -> edge sidecar -> orders sidecar -> orders.
    def parent_service(span: dict) -> str:
        return trace.service(by_id[trace.parent(span)])

    assert {parent_service(s) for s in trace.spans if trace.service(s) == "edge-sidecar"} == {
        "edge"
    }
    orders_sidecar = [s for s in trace.spans if trace.service(s) == "orders-sidecar"]
    assert "edge-sidecar" in {parent_service(s) for s in orders_sidecar}
    assert "orders-sidecar" in {parent_service(s) for s in trace.find("orders", "server")}


def test_mesh_trace_prints_the_tree_of_an_orders_trace(
    edge: httpx.Client, jaeger_query: JaegerQuery
) -> None:
    resp = edge.post("/orders", json={"userId": "alice", "items": ITEMS}, headers=FORCE_TRACE)
    assert resp.status_code == 201, resp.text
    order_id = resp.json()["id"]

    def first_trace() -> str | None:
        found = jaeger_query.traces_of_order(order_id)
        # Each Envoy and SDK exports on its own schedule: wait for every hop of the request.
        if found and Trace(found[0]).services() >= REQUEST_PATH:
            return found[0]["traceID"]
        return None

    trace_id = wait_for(
        first_trace, timeout=SPAN_TIMEOUT_S, what=f"a trace of order {order_id}", interval=1.0
    )

    out = subprocess.run(
        [sys.executable, "-m", "mesh.runtime.cli", "trace", order_id],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: ")
    assert lines[1].startswith("edge: ")
    assert any(line.startswith("  edge-sidecar: ") for line in lines)
    assert any(line.lstrip().startswith("orders: ") and line.startswith("      ") for line in lines)
    assert all(line.rstrip().endswith((" ms", "[ERROR]")) for line in lines[1:] if ": " in line)


def test_a_clients_traceparent_is_continued_by_the_edge_and_every_envoy_after_it(
    edge: httpx.Client, jaeger_query: JaegerQuery
) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)

    resp = edge.get("/orders", params={"userId": "alice"},
                    headers={"traceparent": f"00-{trace_id}-{client_span}-01"})  # fmt: skip

    assert resp.status_code == 200, resp.text

    def envoys_reported() -> Trace | None:
        try:
            trace = Trace(jaeger_query.trace(trace_id))
        except TraceNotFound:
            return None
        # Every process flushes its spans on its own timer: until the last has reported, a
        # span whose parent is still in flight looks like a second root.
        complete = {"edge", "edge-sidecar", "orders-sidecar"} <= trace.services()
        return trace if complete and len(trace.roots()) == 1 else None

    trace = wait_for(
        envoys_reported,
        timeout=SPAN_TIMEOUT_S,
        what=f"spans of the edge and both sidecars in trace {trace_id}, under one root",
        interval=1.0,
    )
    (root,) = trace.roots()
    assert (trace.service(root), trace.parent(root)) == ("edge", client_span)
