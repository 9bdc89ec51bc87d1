from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mesh.runtime import trace

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "jaeger_trace.json").read_text())
TRACE = FIXTURE["data"][0]
ORDER_ID = "8f14e45f-ceea-467f-a0e6-0a1b2c3d4e5f"


def test_the_tree_links_parents_and_sorts_children_by_start_time() -> None:
    (root,) = trace.build_tree(trace.spans_of(TRACE))
    assert (root.service, root.operation) == ("edge", "POST /orders")
    (sidecar,) = root.children
    (orders,) = sidecar.children
    assert [c.operation for c in orders.children] == ["GET /users/alice", "payment-tasks publish"]
    (consume,) = orders.children[1].children
    assert (consume.service, consume.parent_id) == ("payments-worker", "a4")


def test_the_printout_is_indented_with_durations_and_error_markers() -> None:
    lines = list(trace.render(trace.build_tree(trace.spans_of(TRACE))))
    assert lines == [
        "edge: POST /orders  25.0 ms",
        "  edge-sidecar: egress orders  20.0 ms",
        "    orders: POST /orders  15.0 ms",
        "      orders: GET /users/alice  4.0 ms",
        "      orders: payment-tasks publish  2.0 ms",
        "        payments-worker: payment-tasks process  9.0 ms",
        "          payments-worker: charge  3.0 ms  [ERROR]",
    ]


def test_a_span_whose_parent_is_missing_is_printed_as_a_root() -> None:
    partial = {**TRACE, "spans": [s for s in TRACE["spans"] if s["spanID"] != "a2"]}
    roots = trace.build_tree(trace.spans_of(partial))
    assert [(r.service, r.operation) for r in roots] == [
        ("edge", "POST /orders"),
        ("orders", "POST /orders"),
    ]


def test_a_follows_from_reference_counts_as_the_parent() -> None:
    raw = {**TRACE["spans"][0], "references": [{"refType": "FOLLOWS_FROM", "spanID": "a4"}]}
    (span,) = trace.spans_of({**TRACE, "spans": [raw]})
    assert span.parent_id == "a4"


def query_against(handler) -> trace.JaegerQuery:
    return trace.JaegerQuery("http://jaeger.test", transport=httpx.MockTransport(handler))


def test_a_trace_id_is_fetched_by_id() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=FIXTURE)

    lines = trace.lines_for(query_against(handler), TRACE["traceID"].upper())
    assert seen == [f"/api/traces/{TRACE['traceID']}"]
    assert lines[0] == f"trace {TRACE['traceID']}: 7 spans, 4 services, 1 with errors"
    assert lines[1] == "edge: POST /orders  25.0 ms"


def test_an_order_id_finds_the_oldest_trace_of_the_orders_service_with_that_tag() -> None:
    later = {
        **TRACE,
        "traceID": "0" * 31 + "1",
        "spans": [{**s, "startTime": s["startTime"] + 10**6} for s in TRACE["spans"]],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/traces"
        assert request.url.params["service"] == "orders"
        assert json.loads(request.url.params["tags"]) == {"order.id": ORDER_ID}
        return httpx.Response(200, json={"data": [later, TRACE]})

    lines = trace.lines_for(query_against(handler), ORDER_ID)
    assert lines[0].startswith(f"trace {TRACE['traceID']}:")
    assert lines[-1] == f"the order also appears in 1 later traces: {later['traceID']}"


def test_an_unknown_order_or_trace_is_reported_as_not_found() -> None:
    empty = query_against(lambda request: httpx.Response(200, json={"data": []}))
    with pytest.raises(trace.TraceNotFound, match=r"order\.id=nope"):
        trace.lines_for(empty, "nope")
    missing = query_against(lambda request: httpx.Response(404, json={"errors": []}))
    with pytest.raises(trace.TraceNotFound):
        trace.lines_for(missing, "f" * 32)
