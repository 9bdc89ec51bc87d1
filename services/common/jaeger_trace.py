"""A trace as Jaeger's query API returns it (`/api/traces`): spans with CHILD_OF / FOLLOWS_FROM
references and processes naming the services, read into a tree. Plain functions, shared by
`mesh trace` and the web front end's waterfall."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The attribute the orders service sets on the spans that handle an order
# (services/common/telemetry.py set_order_id): an order's traces are found by it.
ORDER_ID_TAG = "order.id"
ORDER_SERVICE = "orders"


@dataclass
class Span:
    span_id: str
    parent_id: str | None
    service: str
    operation: str
    start_us: int
    duration_us: int
    error: bool
    kafka: bool
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return self.duration_us / 1000


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


def _span(raw: Mapping[str, Any], processes: Mapping[str, Any]) -> Span:
    tags = _tags(raw)
    process = processes.get(str(raw.get("processID")), {})
    return Span(
        span_id=str(raw.get("spanID")),
        parent_id=_parent(raw),
        service=str(process.get("serviceName", "?")),
        operation=str(raw.get("operationName", "")),
        start_us=int(raw.get("startTime", 0)),
        duration_us=int(raw.get("duration", 0)),
        error=tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR",
        kafka=tags.get("messaging.system") == "kafka",
    )


def spans_of(trace: Mapping[str, Any]) -> list[Span]:
    """The spans of one trace, each with its service name."""
    processes = trace.get("processes") or {}
    return [_span(raw, processes) for raw in trace.get("spans") or []]


def build_tree(spans: list[Span]) -> list[Span]:
    """Link every span to its parent; return the roots. A span whose parent is not in the trace
    (its process has not sent it yet) is a root of its own. Roots and every span's children are
    sorted by start time."""
    by_id = {span.span_id: span for span in spans}
    roots: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start_us, s.span_id)):
        parent = by_id.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    return roots
