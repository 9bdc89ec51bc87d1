from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mesh.runtime import cli, trace
from services.common import jaeger_trace

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "jaeger_trace.json").read_text())
TRACE = FIXTURE["data"][0]
ORDER_ID = "8f14e45f-ceea-467f-a0e6-0a1b2c3d4e5f"


def test_the_tree_links_parents_and_sorts_children_by_start_time() -> None:
    (root,) = jaeger_trace.build_tree(jaeger_trace.spans_of(TRACE))
    assert (root.service, root.operation) == ("edge", "POST /orders")
    (sidecar,) = root.children
    (orders,) = sidecar.children
    assert [c.operation for c in orders.children] == ["GET /users/alice", "payment-tasks publish"]
    (consume,) = orders.children[1].children
    assert (consume.service, consume.parent_id) == ("payments-worker", "a4")


def test_the_printout_is_indented_with_durations_and_error_markers() -> None:
    lines = list(trace.render(jaeger_trace.build_tree(jaeger_trace.spans_of(TRACE))))
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
    roots = jaeger_trace.build_tree(jaeger_trace.spans_of(partial))
    assert [(r.service, r.operation) for r in roots] == [
        ("edge", "POST /orders"),
        ("orders", "POST /orders"),
    ]


def test_a_follows_from_reference_counts_as_the_parent() -> None:
    raw = {**TRACE["spans"][0], "references": [{"refType": "FOLLOWS_FROM", "spanID": "a4"}]}
    (span,) = jaeger_trace.spans_of({**TRACE, "spans": [raw]})
    assert span.parent_id == "a4"


def query_against(handler) -> trace.JaegerQuery:
    return trace.JaegerQuery("http://jaeger.test", transport=httpx.MockTransport(handler))


def test_a_trace_id_is_fetched_by_id() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=FIXTURE)

    lines = trace.lines(trace.find(query_against(handler), TRACE["traceID"].upper()))
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

    lines = trace.lines(trace.find(query_against(handler), ORDER_ID))
    assert lines[0].startswith(f"trace {TRACE['traceID']}:")
    assert lines[-1] == f"the order also appears in 1 later traces: {later['traceID']}"


def test_an_unknown_order_or_trace_is_reported_as_not_found() -> None:
    empty = query_against(lambda request: httpx.Response(200, json={"data": []}))
    with pytest.raises(trace.TraceNotFound, match=r"order\.id=nope"):
        trace.find(empty, "nope")
    missing = query_against(lambda request: httpx.Response(404, json={"errors": []}))
    with pytest.raises(trace.TraceNotFound):
        trace.find(missing, "f" * 32)


# --- waiting for spans to reach Jaeger -----------------------------------------------------------

PARTIAL = {**TRACE, "spans": [s for s in TRACE["spans"] if s["spanID"] != "a2"]}


class FakeTime:
    """A clock that only sleeping moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def jaeger_answering(*answers: dict) -> tuple[trace.JaegerQuery, list[str]]:
    """A Jaeger whose order search answers `answers` in turn (the last one from then on)."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=answers[min(len(paths), len(answers)) - 1])

    return query_against(handler), paths


def waiting(
    query: trace.JaegerQuery, fake: FakeTime, said: list[str], wanted: str = ORDER_ID
) -> trace.Found:
    """wait_for as `mesh trace` calls it (10 s, every 0.5 s), on the fake clock."""
    return trace.wait_for(
        query, wanted, wait_s=10, interval_s=0.5, say=said.append, clock=fake.clock,
        sleep=fake.sleep,
    )  # fmt: skip


def test_a_trace_that_reaches_jaeger_late_is_waited_for_and_the_wait_is_said_once() -> None:
    query, paths = jaeger_answering({"data": []}, {"data": []}, {"data": []}, {"data": [TRACE]})
    time, said = FakeTime(), []
    found = waiting(query, time, said)
    assert found.trace["traceID"] == TRACE["traceID"]
    assert len(paths) == 4
    assert time.sleeps == [0.5, 0.5, 0.5]
    assert said == [f"waiting up to 10 s for the trace of order {ORDER_ID} to reach Jaeger"]


def test_a_trace_already_there_is_not_waited_for() -> None:
    query, paths = jaeger_answering({"data": [TRACE]})
    time, said = FakeTime(), []
    waiting(query, time, said)
    assert (len(paths), time.sleeps, said) == (1, [], [])


def test_no_trace_by_the_deadline_is_not_found_and_says_how_long_it_waited() -> None:
    query, paths = jaeger_answering({"data": []})
    time, said = FakeTime(), []
    with pytest.raises(trace.TraceNotFound, match=r"order\.id=.*\(waited 10 s\)"):
        waiting(query, time, said)
    assert time.now == 10
    assert len(paths) == 21  # at 0, 0.5, ..., 10 s


def test_a_trace_id_missing_at_first_is_polled_by_id() -> None:
    answers = iter([httpx.Response(404, json={"errors": []}), httpx.Response(200, json=FIXTURE)])
    query = query_against(lambda request: next(answers))
    time, said = FakeTime(), []
    found = waiting(query, time, said, wanted=TRACE["traceID"])
    assert found.trace["traceID"] == TRACE["traceID"]
    assert said == [f"waiting up to 10 s for trace {TRACE['traceID']} to reach Jaeger"]


def test_a_trace_is_waited_for_until_the_spans_above_the_first_ones_arrive() -> None:
    query, paths = jaeger_answering({"data": [PARTIAL]}, {"data": [TRACE]})
    time, said = FakeTime(), []
    found = waiting(query, time, said)
    assert found.roots == 1
    assert trace.incomplete(found) is None
    assert len(paths) == 2


def test_a_trace_still_missing_spans_at_the_deadline_is_printed_with_a_warning() -> None:
    query, _ = jaeger_answering({"data": [PARTIAL]})
    time, said = FakeTime(), []
    found = waiting(query, time, said)
    assert time.now == 10
    assert trace.lines(found)[1:3] == [
        "edge: POST /orders  25.0 ms",
        "orders: POST /orders  15.0 ms",
    ]
    assert trace.incomplete(found).startswith("2 spans have no parent in the trace yet")


def test_a_jaeger_that_fails_is_not_waited_for() -> None:
    query = query_against(lambda request: httpx.Response(500))
    time = FakeTime()
    with pytest.raises(httpx.HTTPStatusError):
        waiting(query, time, [])
    assert time.sleeps == []


def test_mesh_trace_says_what_it_waits_for_on_stderr_and_prints_the_tree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    query, _ = jaeger_answering({"data": []}, {"data": [TRACE]})
    monkeypatch.setattr(trace, "JaegerQuery", lambda url: query)

    assert cli.main(["trace", ORDER_ID, "--wait", "5"]) == 0

    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "edge: POST /orders  25.0 ms"
    assert err == f"waiting up to 5 s for the trace of order {ORDER_ID} to reach Jaeger\n"
