"""One trace from Jaeger's query API (`/api/traces`), shaped for a waterfall: each span's
service, operation, start offset and duration, depth in the tree, and whether it is a Kafka hop.
Plain Python, unit-tested on a recorded trace."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.common.jaeger_trace import Span, build_tree, spans_of


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
    spans = spans_of(trace)
    roots = build_tree(spans)
    start = min((s.start_us for s in spans), default=0)
    end = max((s.start_us + s.duration_us for s in spans), default=0)
    rows: list[dict[str, Any]] = []

    def walk(span: Span, depth: int) -> None:
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
