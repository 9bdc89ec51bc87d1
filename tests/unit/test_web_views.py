"""The web BFF's plain parts: the joined order view, the trace waterfall, the admin view's
health rows and fault values."""

import copy
import json
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.web.admin import fault_value, mesh_health, service_name
from services.web.views import is_about_order, order_view
from services.web.waterfall import first_trace, waterfall

TRACE = json.loads(Path(__file__).with_name("fixtures").joinpath("jaeger_trace.json").read_text())[
    "data"
][0]
ORDER = {"id": "8f14e45f-ceea-467f-a0e6-0a1b2c3d4e5f", "userId": "alice", "status": "PAID"}


def note(order_id, created, subject=None):
    return {"id": created, "subject": subject, "createdAt": created, "data": {"orderId": order_id}}


def test_the_order_view_keeps_only_the_orders_notifications_oldest_first():
    other = note("another", "2026-01-01T00:00:01Z")
    later = note(ORDER["id"], "2026-01-01T00:00:03Z")
    earlier = note(ORDER["id"], "2026-01-01T00:00:02Z")
    view = order_view(ORDER, {"id": "p1", "status": "SUCCEEDED"}, [other, later, earlier])
    assert view["order"] == ORDER
    assert view["payment"] == {"id": "p1", "status": "SUCCEEDED"}
    assert view["paymentError"] is None
    assert [n["createdAt"] for n in view["notifications"]] == [earlier["id"], later["id"]]


def test_a_notification_is_about_an_order_by_its_data_or_its_subject():
    assert is_about_order({"subject": f"order/{ORDER['id']}", "data": {}}, ORDER["id"])
    assert not is_about_order({"subject": "order/x", "data": {"orderId": "y"}}, ORDER["id"])
    assert not is_about_order({"data": "not an object"}, ORDER["id"])


def test_the_order_view_says_why_the_payment_is_missing():
    view = order_view(ORDER, None, [], payment_error="payments unavailable: UNAVAILABLE")
    assert view["payment"] is None
    assert view["paymentError"] == "payments unavailable: UNAVAILABLE"


def test_the_waterfall_lists_every_span_depth_first_with_offsets_from_the_trace_start():
    shaped = waterfall(TRACE)
    spans = shaped["spans"]
    assert len(spans) == len(TRACE["spans"])
    assert shaped["traceId"] == TRACE["traceID"]
    assert spans[0]["depth"] == 0 and spans[0]["offsetUs"] == 0
    start = min(s["startTime"] for s in TRACE["spans"])
    end = max(s["startTime"] + s["duration"] for s in TRACE["spans"])
    assert shaped["durationUs"] == end - start
    by_id = {s["spanId"]: s for s in spans}
    for index, span in enumerate(spans):
        if span["depth"] > 0:
            parent = by_id[span["parentId"]]
            assert parent["depth"] == span["depth"] - 1
            assert spans.index(parent) < index, "a parent comes before its children"
    assert {"edge", "orders", "payments-worker"} <= set(shaped["services"])


def test_the_waterfall_marks_the_kafka_hops():
    spans = waterfall(TRACE)["spans"]
    kafka = {s["operation"] for s in spans if s["kafka"]}
    assert "payment-tasks process" in kafka
    assert not any(s["kafka"] for s in spans if s["operation"].startswith("POST /orders"))


def test_a_span_whose_parent_is_missing_is_a_root_of_its_own():
    trace = copy.deepcopy(TRACE)
    child = next(s for s in trace["spans"] if s.get("references"))
    child["references"] = [{"refType": "CHILD_OF", "spanID": "not-sent-yet"}]
    spans = waterfall(trace)["spans"]
    assert next(s for s in spans if s["spanId"] == child["spanID"])["depth"] == 0


def test_the_first_trace_of_an_order_is_the_earliest_one():
    later = copy.deepcopy(TRACE)
    for span in later["spans"]:
        span["startTime"] += 10_000_000
    later["traceID"] = "later"
    assert first_trace([later, TRACE])["traceID"] == TRACE["traceID"]
    assert first_trace([]) is None
    assert first_trace([{"traceID": "empty", "spans": []}]) is None


def test_mesh_health_is_one_row_per_instance_with_its_worst_check():
    checks = [
        {"ServiceName": "orders", "ServiceID": "orders-1", "Status": "passing"},
        {"ServiceName": "orders", "ServiceID": "orders-1", "Status": "critical"},
        {"ServiceName": "orders", "ServiceID": "orders-2", "Status": "passing"},
        {
            "ServiceName": "orders-sidecar-proxy",
            "ServiceID": "orders-1-sidecar-proxy",
            "Status": "passing",
        },
        {"ServiceName": "", "ServiceID": "", "Status": "passing", "CheckID": "serfHealth"},
        {"ServiceName": "consul", "ServiceID": "consul", "Status": "passing"},
    ]
    assert mesh_health(checks) == [
        {"service": "orders", "instance": "orders-1", "status": "critical"},
        {"service": "orders", "instance": "orders-2", "status": "passing"},
    ]


def test_a_fault_value_is_what_the_services_fault_watchers_read():
    value = json.loads(fault_value({"errorRate": 0.5, "latencyMs": 200}))
    assert value == {"error_rate": 0.5, "latency_ms": 200, "methods": []}


@pytest.mark.parametrize(
    "payload",
    [{"errorRate": 2}, {"errorRate": -0.1}, {"latencyMs": 10**9}, {"errorRate": "0.5"},
     {"errorRate": True}, [1]],
)  # fmt: skip
def test_a_fault_value_out_of_range_is_refused(payload):
    with pytest.raises(InvalidArgument):
        fault_value(payload)


@pytest.mark.parametrize("name", ["", "Orders", "../kv", "orders/x", "a" * 70])
def test_only_service_names_may_name_a_fault_key(name):
    with pytest.raises(InvalidArgument):
        service_name(name)
