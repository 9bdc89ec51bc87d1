"""One trace from Jaeger's query API (`/api/traces`), shaped for a waterfall: each span's
service, operation, start offset and duration, depth in the tree, and whether it is a Kafka hop.
Plain Python, unit-tested on a recorded trace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The attribute the orders service sets on the spans that handle an order
# (services/common/telemetry.py set_order_id); the trace view finds an order's traces by it.
ORDER_ID_TAG = "order.id"
ORDER_SERVICE = "orders"


@dataclass
class _Span:
    span_id: str
    parent_id: str | None
    service: str
    operation: str
    start_us: int
    duration_us: int
    error: bool
    kafka: bool
    children: list[_Span] = field(default_factory=list)


def _tags(raw: Mapping[str, Any]) -> dict[str, object]:
    return {tag.get("key"): tag.get("value") for tag in raw.get("tags") or []}


def _parent(raw: Mapping[str, Any]) -> str | None:
    """The CHILD_OF reference if there is one, else the first FOLLOWS_FROM (a consumer's link
    to its producer)."""
    references = raw.get("references") or []
    for kind in ("CHILD_OF", "FOLLOWS_FROM"):
        for reference in references:
            if reference.get("refType") == kind:
                return str(reference.get("spanID"))
    return None


def _span(raw: Mapping[str, Any], processes: Mapping[str, Any]) -> _Span:
    tags = _tags(raw)
    process = processes.get(str(raw.get("processID")), {})
    return _Span(
        span_id=str(raw.get("spanID")),
        parent_id=_parent(raw),
        service=str(process.get("serviceName", "?")),
        operation=str(raw.get("operationName", "")),
        start_us=int(raw.get("startTime", 0)),
        duration_us=int(raw.get("duration", 0)),
        error=tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR",
        kafka=tags.get("messaging.system") == "kafka",
    )


def first_trace(traces: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The earliest of an order's traces: the one that created it (the later ones are reads)."""
    with_spans = [t for t in traces if t.get("spans")]
    if not with_spans:
        return None
    return min(with_spans, key=lambda t: min(int(s.get("startTime", 0)) for s in t["spans"]))


def waterfall(trace: Mapping[str, Any]) -> dict[str, Any]:
    """The trace's spans in waterfall order (depth first, siblings by start), each with its
    offset from the trace's start. A span whose parent is not in the trace (its process has
    not sent it yet) is a root of its own."""
    processes = trace.get("processes") or {}
    spans = [_span(raw, processes) for raw in trace.get("spans") or []]
    by_id = {span.span_id: span for span in spans}
    roots: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start_us, s.span_id)):
        parent = by_id.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    start = min((s.start_us for s in spans), default=0)
    end = max((s.start_us + s.duration_us for s in spans), default=0)
    rows: list[dict[str, Any]] = []

    def walk(span: _Span, depth: int) -> None:
        rows.append({
            "spanId": span.span_id,
            "parentId": span.parent_id,
            "service": span.service,
            "operation": span.operation,
            "offsetUs": span.start_us - start,
            "durationUs": span.duration_us,
            "depth": depth,
            "kafka": span.kafka,
            "error": span.error,
        })  # fmt: skip
        for child in span.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return {
        "traceId": trace.get("traceID"),
        "durationUs": end - start,
        "services": sorted({s.service for s in spans}),
        "spans": rows,
    }


def trace_page(ui_url: str | None, trace_id: str) -> str | None:
    """The trace's page in Jaeger's UI where the deployment has one (compose), else None."""
    return None if ui_url is None else f"{ui_url.rstrip('/')}/trace/{trace_id}"
