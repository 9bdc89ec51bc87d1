"""OpenTelemetry tracing for every shopmesh process: the SDK setup and the hand-made pieces.

`setup()` runs once per process (services.common.entrypoint, the payment worker): a
TracerProvider whose resource names the service and instance, W3C tracecontext + baggage
propagators, and a batching OTLP gRPC exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
(without it spans still get ids, for logs and propagation, but nothing is exported).
`Telemetry.shutdown()` flushes within a bounded time when the process stops.

Instrumentation: gRPC uses the official opentelemetry-instrumentation-grpc interceptors
(services.common.grpc_server / grpc_client). The official aiohttp-server, aiohttp-client and
asyncpg instrumentations only exist as 0.66b1, which pins semantic conventions that cannot be
installed beside opentelemetry-sdk 1.45.2 (whose API carries the traceparent parsing fix), so
those three are here, written against the OTel API: `http_middleware`, `client_trace_config`
and `record_query`. Kafka is traced by hand in services.common.messaging: the trace context
travels in our envelope's headers through the outbox table, which aiokafka instrumentation
cannot see.

Tracing never breaks a request: an exporter that cannot reach its endpoint drops spans in its
own thread, and its complaints are logged at most once a minute.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.config import service_version

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
NAMESPACE = "shopmesh"
# The span attribute `mesh trace ORDER_ID` searches by.
ORDER_ID = "order.id"
SHUTDOWN_BUDGET_S = 3.0
MAX_QUERY_CHARS = 2000
# Loggers of the SDK's export path: quiet while the collector is down.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)
EXPORT_LOG_INTERVAL_S = 60.0

SPAN_CONTEXT = web.RequestKey("otel_span_context", trace.SpanContext)


def _tracer(tracer: trace.Tracer | None) -> trace.Tracer:
    return tracer or trace.get_tracer(__name__)


@dataclass
class Telemetry:
    provider: TracerProvider
    exporter: SpanExporter | None

    def shutdown(self, budget_s: float = SHUTDOWN_BUDGET_S) -> None:
        """Export what is queued and stop, giving up after `budget_s` (an unreachable
        collector must not hold the process past its stop timeout)."""
        done = threading.Thread(target=self._flush_and_stop, name="otel-shutdown", daemon=True)
        done.start()
        done.join(budget_s)

    def _flush_and_stop(self) -> None:
        self.provider.force_flush(int(SHUTDOWN_BUDGET_S * 1000))
        self.provider.shutdown()


def resource(service: str, instance: str) -> Resource:
    return Resource.create(
        {
            "service.name": service,
            "service.namespace": NAMESPACE,
            "service.instance.id": instance,
            "service.version": service_version(),
        }
    )


def build(
    service: str,
    instance: str,
    env: Mapping[str, str] | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> Telemetry:
    """A provider for `service`/`instance`; it exports to `exporter`, or else over OTLP gRPC to
    the endpoint in `env` (default: the process environment), or else nowhere."""
    source = os.environ if env is None else env
    endpoint = source.get(TRACES_ENDPOINT_ENV, "").strip() or source.get(ENDPOINT_ENV, "").strip()
    if exporter is None and endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider = TracerProvider(resource=resource(service, instance), shutdown_on_exit=False)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Telemetry(provider, exporter)


def setup(service: str, instance: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """Build the process's provider and make it, and the W3C propagators, the global ones."""
    telemetry = build(service, instance, env)
    trace.set_tracer_provider(telemetry.provider)
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    for name in _EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(OncePerInterval(EXPORT_LOG_INTERVAL_S))
    return telemetry


class OncePerInterval(logging.Filter):
    """Lets one record through per `interval_s` (per logger it is added to)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            return False
        self._last = now
        return True


def set_order_id(order_id: str | uuid.UUID) -> None:
    """Tag the current span with the order it works on (a no-op outside a span)."""
    trace.get_current_span().set_attribute(ORDER_ID, str(order_id))


# -- aiohttp server ----------------------------------------------------------------------------


def http_middleware(
    tracer: trace.Tracer | None = None,
) -> Middleware:
    """A SERVER span per request, continuing the caller's `traceparent`.

    Named after the route template ("POST /orders"); a WebSocket upgrade's span lasts as long
    as the connection. The span context is kept on the request for the access log.
    """
    tracer = _tracer(tracer)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_template(request)
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "network.protocol.version": f"{request.version.major}.{request.version.minor}",
        }
        if route is not None:
            attributes["http.route"] = route
        if request.remote:
            attributes["client.address"] = request.remote
        user_agent = request.headers.get("User-Agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        with tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            request[SPAN_CONTEXT] = span.get_span_context()
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _end_http(span, exc.status)
                raise
            except BaseException as exc:
                span.record_exception(exc)
                _end_http(span, 500, f"{type(exc).__name__}: {exc}")
                raise
            _end_http(span, response.status)
            return response

    return middleware


def _route_template(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _end_http(span: trace.Span, status: int, description: str | None = None) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, description))


# -- aiohttp client ----------------------------------------------------------------------------


def client_trace_config(tracer: trace.Tracer | None = None) -> aiohttp.TraceConfig:
    """For an aiohttp ClientSession calling another service: a CLIENT span per request made
    inside a span, its context sent as `traceparent`, so the sidecar and the server continue
    the trace."""
    tracer = _tracer(tracer)

    async def on_request_start(
        _session: aiohttp.ClientSession,
        trace_ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if not trace.get_current_span().get_span_context().is_valid:
            return  # background housekeeping (a key refresh at startup): not a trace of its own
        url = params.url
        span = tracer.start_span(
            params.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                "url.full": str(url.with_query(None).with_user(None)),
                "server.address": url.host or "",
                "server.port": url.port or 0,
            },
        )
        trace_ctx.span = span
        propagate.inject(params.headers, context=trace.set_span_in_context(span))

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    config.on_request_end.append(_client_request_end)
    config.on_request_exception.append(_client_request_exception)
    return config


async def _client_request_end(
    _session: aiohttp.ClientSession,
    trace_ctx: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    span = getattr(trace_ctx, "span", None)
    if span is None:
        return
    status = params.response.status
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


async def _client_request_exception(
    _session: aiohttp.ClientSession,
    trace_ctx: SimpleNamespace,
    params: aiohttp.TraceRequestExceptionParams,
) -> None:
    span = getattr(trace_ctx, "span", None)
    if span is None:
        return
    span.record_exception(params.exception)
    span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
    span.end()


# -- asyncpg -----------------------------------------------------------------------------------


def query_logger(tracer: trace.Tracer | None = None) -> Callable[[Any], None]:
    """An asyncpg query logger (`conn.add_query_logger`): a CLIENT span for each query that
    ended, under the span that ran it (asyncpg calls it in a copy of the caller's context).
    Queries outside any span (the outbox relay's polling) are not traced: each would be a
    trace of its own."""
    tracer = _tracer(tracer)

    def record(query: Any) -> None:
        _record_query(tracer, query)

    return record


def _record_query(tracer: trace.Tracer, query: Any) -> None:
    parent = trace.get_current_span()
    # Outside any span, or in a trace the edge did not sample: its child would record nothing.
    if not parent.get_span_context().is_valid or not parent.is_recording():
        return
    end = time.time_ns()
    text = " ".join(str(query.query).split())
    operation = text.split(" ", 1)[0].rstrip(";").upper() or "QUERY"
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "db.query.text": text[:MAX_QUERY_CHARS],
    }
    database = getattr(query.conn_params, "database", None)
    if database:
        attributes["db.namespace"] = database
    address = query.conn_addr
    if isinstance(address, tuple) and len(address) >= 2:
        attributes["server.address"] = str(address[0])
        attributes["server.port"] = int(address[1])
    span = tracer.start_span(
        operation,
        context=otel_context.get_current(),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        start_time=end - int(query.elapsed * 1e9),
    )
    if query.exception is not None:
        span.record_exception(query.exception)
        span.set_status(Status(StatusCode.ERROR, type(query.exception).__name__))
    span.end(end_time=end)
