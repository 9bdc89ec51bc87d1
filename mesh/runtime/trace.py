"""`mesh trace`: one trace from Jaeger's query API, printed as an indented tree of spans.

The tree is built from Jaeger's JSON (`/api/traces/<id>`: spans with CHILD_OF / FOLLOWS_FROM
references, processes naming the services) by plain functions, unit-tested on a fixture.
Spans reach Jaeger seconds after the request, each process sending them on its own timer, so
`wait_for` polls the query API until the trace is there with its root, or a deadline passes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.common.jaeger_trace import ORDER_ID_TAG, ORDER_SERVICE, Span, build_tree, spans_of

TRACE_ID = re.compile(r"[0-9a-f]{32}")
# Every process sends its spans on its own timer (the services' batch span processors and
# Envoy's tracer, every 5 s): a trace reaches Jaeger in pieces, seconds after the request.
WAIT_S = 10.0
POLL_INTERVAL_S = 0.5


class TraceNotFound(LookupError):
    pass


def render(roots: list[Span], indent: str = "  ") -> Iterator[str]:
    def walk(span: Span, depth: int) -> Iterator[str]:
        marker = "  [ERROR]" if span.error else ""
        yield (
            f"{indent * depth}{span.service}: {span.operation}  {span.duration_ms:.1f} ms{marker}"
        )
        for child in span.children:
            yield from walk(child, depth + 1)

    for root in roots:
        yield from walk(root, 0)


def summary(trace_id: str, spans: list[Span]) -> str:
    services = {span.service for span in spans}
    errors = sum(span.error for span in spans)
    text = f"trace {trace_id}: {len(spans)} spans, {len(services)} services"
    return text + (f", {errors} with errors" if errors else "")


class JaegerQuery:
    """The few calls of Jaeger's HTTP query API (the one the UI uses)."""

    def __init__(
        self, base_url: str, timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def trace(self, trace_id: str) -> dict[str, Any]:
        resp = self._http.get(f"/api/traces/{trace_id}")
        if resp.status_code == 404:
            raise TraceNotFound(f"Jaeger has no trace {trace_id}")
        resp.raise_for_status()
        data = resp.json().get("data") or []
        if not data:
            raise TraceNotFound(f"Jaeger has no trace {trace_id}")
        trace: dict[str, Any] = data[0]
        return trace

    def traces_of_order(self, order_id: str) -> list[dict[str, Any]]:
        """Every trace in which the orders service handled `order_id`, oldest first (the
        first is the one that created the order)."""
        resp = self._http.get(
            "/api/traces",
            params={
                "service": ORDER_SERVICE,
                "tags": json.dumps({ORDER_ID_TAG: order_id}),
                "limit": 100,
            },
        )
        resp.raise_for_status()
        traces = resp.json().get("data") or []
        return sorted(traces, key=lambda t: min(s["startTime"] for s in t["spans"]))


@dataclass(frozen=True)
class Found:
    """The trace to print and, for an order id, the ids of the order's later traces."""

    trace: dict[str, Any]
    later: list[str]

    @property
    def roots(self) -> int:
        return len(build_tree(spans_of(self.trace)))


def is_trace_id(trace_or_order_id: str) -> bool:
    return TRACE_ID.fullmatch(trace_or_order_id.strip().lower()) is not None


def find(query: JaegerQuery, trace_or_order_id: str) -> Found:
    """The trace for a trace id (32 hex digits) or an order id (its creating trace)."""
    wanted = trace_or_order_id.strip()
    if is_trace_id(wanted):
        return Found(query.trace(wanted.lower()), [])
    found = query.traces_of_order(wanted)
    if not found:
        raise TraceNotFound(f"no trace of the orders service has {ORDER_ID_TAG}={wanted}")
    return Found(found[0], [t["traceID"] for t in found[1:]])


def wait_for(
    query: JaegerQuery,
    trace_or_order_id: str,
    *,
    wait_s: float = WAIT_S,
    interval_s: float = POLL_INTERVAL_S,
    say: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Found:
    """`find`, polled for up to `wait_s` until the trace is in Jaeger with a single root (while
    a process has not sent its spans, the spans below them are roots); after that, the trace
    as it is, or TraceNotFound. `say` is told once what is waited for."""
    deadline = clock() + wait_s
    waiting = False
    while True:
        try:
            found = find(query, trace_or_order_id)
            if found.roots <= 1 or clock() >= deadline:
                return found
        except TraceNotFound as exc:
            if clock() >= deadline:
                raise TraceNotFound(
                    f"{exc} (waited {wait_s:g} s)" if waiting else str(exc)
                ) from None
        if not waiting:
            say(f"waiting up to {wait_s:g} s for {_what(trace_or_order_id)} to reach Jaeger")
            waiting = True
        sleep(min(interval_s, max(deadline - clock(), 0.0)))


def _what(trace_or_order_id: str) -> str:
    wanted = trace_or_order_id.strip()
    return f"trace {wanted.lower()}" if is_trace_id(wanted) else f"the trace of order {wanted}"


def lines(found: Found) -> list[str]:
    """The printed tree, then the order's later traces."""
    spans = spans_of(found.trace)
    printed = [summary(found.trace["traceID"], spans), *render(build_tree(spans))]
    if found.later:
        printed.append(
            f"the order also appears in {len(found.later)} later traces: {', '.join(found.later)}"
        )
    return printed


def incomplete(found: Found) -> str | None:
    """A warning when spans of the trace are still missing, else None."""
    if found.roots <= 1:
        return None
    return (
        f"{found.roots} spans have no parent in the trace yet: a process has not sent its spans "
        "(run `mesh trace` again in a few seconds)"
    )
