"""A service's Prometheus metrics: RED for every HTTP route and gRPC method, and messaging.

Names: prefix `shopmesh_`, base units, labels `service`, `route` (the route
template, never the raw path, so ids do not explode the series count), `method`, `status`.
The request buckets resolve the brief's targets: gateway p95 ≤ 200 ms, a service ≤ 300 ms.
Kafka, outbox and DLQ metrics are recorded through `MessagingMetrics` by
services/common/messaging; the WebSocket gauges by services/notifications. docs/observability.md
lists them all. Prometheus adds `instance` (the instance id) and `job` at scrape time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Gauge, Histogram

from services.common import rpc
from services.common.admin import AdminServer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "shopmesh_requests_total",
    "Requests handled, by route or RPC and outcome",
    ["service", "route", "method", "status"],
)
DURATION = Histogram(
    "shopmesh_request_duration_seconds",
    "Time to handle a request, by route or RPC",
    ["service", "route", "method"],
    buckets=BUCKETS,
)

# What a fault flag (shopmesh/faults/<service>, services/common/faults.py) does to this instance
# now: the flags reach each instance through its own Consul watch, so a flag just set or cleared
# is in effect on one instance before another.
FAULT_INJECTION_ACTIVE = Gauge(
    "shopmesh_fault_injection_active",
    "1 while this instance injects the faults its flags ask for, else 0",
    ["service"],
)

# End-to-end delay of an event, from its outbox write to its handling: resolves 0.5 s (the
# MessageAgeHigh alert) and reaches minutes (a backlog after an outage).
MESSAGE_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                       300.0)  # fmt: skip

CONSUMED_OUTCOMES = ("ok", "retried", "dead_lettered", "duplicate")

KAFKA_PRODUCED = Counter(
    "shopmesh_kafka_messages_produced_total",
    "Messages acked by Kafka (all in-sync replicas): outbox relay batches and DLQ sends",
    ["service", "topic"],
)
KAFKA_CONSUMED = Counter(
    "shopmesh_kafka_messages_consumed_total",
    "Messages handled by a consumer group, by outcome: ok, duplicate (already processed), "
    "dead_lettered; retried counts each failed attempt that is tried again",
    ["service", "topic", "group", "outcome"],
)
KAFKA_LAG = Gauge(
    "shopmesh_kafka_consumer_lag",
    "Messages behind in a partition this consumer owns: high watermark minus its position",
    ["service", "group", "topic", "partition"],
)
KAFKA_GROUP_MEMBER = Gauge(
    "shopmesh_kafka_consumer_group_member",
    "1 while this consumer is a member of its group with a current assignment (0 while it "
    "rebalances, rejoins or is out)",
    ["service", "group"],
)
KAFKA_MESSAGE_AGE = Histogram(
    "shopmesh_kafka_message_age_seconds",
    "Time from an event's `time` (its outbox write) to the start of its handling",
    ["service", "topic", "group"],
    buckets=MESSAGE_AGE_BUCKETS,
)
OUTBOX_BACKLOG = Gauge(
    "shopmesh_outbox_backlog", "Outbox rows not yet published to Kafka", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "shopmesh_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row; 0 when all are published",
    ["service"],
)
DLQ_MESSAGES = Counter(
    "shopmesh_dlq_messages_total",
    "Messages sent to <topic>.dlq, by the original topic",
    ["service", "topic"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "shopmesh_websocket_connections", "Open WebSocket connections", ["service"]
)
WEBSOCKET_QUEUE_DEPTH = Gauge(
    "shopmesh_websocket_queue_depth",
    "Messages queued on all WebSocket connections and not yet handed to their sockets",
    ["service"],
)


@dataclass(frozen=True)
class MessagingMetrics:
    """Records the Kafka, outbox and DLQ metrics of one service; `service=None` records
    nothing (a consumer or relay built outside a service, as in unit tests)."""

    service: str | None = None

    def expect(self, topics: Sequence[str], group: str) -> None:
        """Create a consumer's counters and message-age histogram at 0, so that increase() and
        rate() see its first message (a series that appears at 1 shows no increase)."""
        if self.service is None:
            return
        KAFKA_GROUP_MEMBER.labels(self.service, group).set(0)
        for topic in topics:
            DLQ_MESSAGES.labels(self.service, topic)
            KAFKA_MESSAGE_AGE.labels(self.service, topic, group)
            for outcome in CONSUMED_OUTCOMES:
                KAFKA_CONSUMED.labels(self.service, topic, group, outcome)

    def produced(self, topic: str, count: int = 1) -> None:
        if self.service is not None:
            KAFKA_PRODUCED.labels(self.service, topic).inc(count)

    def consumed(self, topic: str, group: str, outcome: str) -> None:
        if self.service is not None:
            KAFKA_CONSUMED.labels(self.service, topic, group, outcome).inc()

    def message_age(self, topic: str, group: str, seconds: float) -> None:
        if self.service is not None:
            KAFKA_MESSAGE_AGE.labels(self.service, topic, group).observe(max(seconds, 0.0))

    def dead_lettered(self, topic: str) -> None:
        if self.service is not None:
            DLQ_MESSAGES.labels(self.service, topic).inc()

    def lag(self, group: str, topic: str, partition: int, messages: int | None) -> None:
        """Set a partition's lag; None forgets it (the partition moved to another consumer)."""
        if self.service is None:
            return
        labels = (self.service, group, topic, str(partition))
        if messages is None:
            with contextlib.suppress(KeyError):  # never set
                KAFKA_LAG.remove(*labels)
        else:
            KAFKA_LAG.labels(*labels).set(max(messages, 0))

    def group_member(self, group: str, member: bool) -> None:
        if self.service is not None:
            KAFKA_GROUP_MEMBER.labels(self.service, group).set(int(member))

    def outbox(self, backlog: int, oldest_age_s: float | None) -> None:
        if self.service is not None:
            OUTBOX_BACKLOG.labels(self.service).set(backlog)
            OUTBOX_OLDEST_AGE.labels(self.service).set(oldest_age_s or 0.0)


def watch_websockets(
    service: str, connections: Callable[[], int], queued: Callable[[], int]
) -> None:
    """Read the WebSocket gauges from `connections()` and `queued()` at every scrape (in the
    metrics server's thread: both must be safe to call from there)."""
    WEBSOCKET_CONNECTIONS.labels(service).set_function(connections)
    WEBSOCKET_QUEUE_DEPTH.labels(service).set_function(queued)


def observe(service: str, route: str, method: str, status: str, seconds: float) -> None:
    REQUESTS.labels(service, route, method, status).inc()
    DURATION.labels(service, route, method).observe(seconds)


def route_template(request: web.Request) -> str:
    """The matched route's template (`/orders/{id}`), or `unmatched`."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def http_middleware(service: str) -> Middleware:
    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = "500"
        try:
            response = await handler(request)
            status = str(response.status)
            return response
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        finally:
            observe(service, route_template(request), request.method, status,
                    time.perf_counter() - started)  # fmt: skip

    return measure


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every RPC (a stream: until it ends) and counts it by its final status code."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: rpc.Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> rpc.Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        service = self._service

        def done(context: rpc.Context, started: float) -> None:
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else "OK"
            observe(service, method, "POST", status, time.perf_counter() - started)

        def unary(behavior: rpc.Behavior) -> rpc.Behavior:
            async def measured(request: Any, context: rpc.Context) -> Any:
                started = time.perf_counter()
                try:
                    return await behavior(request, context)
                finally:
                    done(context, started)

            return measured

        def streaming(behavior: rpc.Behavior) -> rpc.Behavior:
            async def measured(request: Any, context: rpc.Context) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    done(context, started)

            return measured

        return rpc.wrap_handler(handler, unary_response=unary, streaming_response=streaming)


def serve_metrics(host: str, port: int | None) -> None:
    """Expose /metrics on the instance's own metrics port (a thread; nothing if no port), for a
    process without a Consul check (the payment workers); services serve /health beside it
    (services/common/admin.py)."""
    if port is not None:
        AdminServer(host, port).start()
