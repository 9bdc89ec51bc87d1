"""Tracing setup and the hand-made instrumentation (services.common.telemetry), the gRPC client
channel, and trace ids in the JSON logs. No network beyond loopback servers in the process."""

import asyncio
import json
import logging

import aiohttp
import grpc
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asyncpg.connection import LoggedQuery
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from mesh.runtime.ports import free_port
from services.common import telemetry
from services.common.grpc_client import upstream_channel
from services.common.logging import JsonAccessLogger, JsonFormatter
from services.common.problem import Problem, problem_middleware

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traceparent_of(span) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


# -- setup -------------------------------------------------------------------------------------


def test_without_an_endpoint_spans_get_ids_but_nothing_is_exported():
    setup = telemetry.build("orders", "orders-1", env={})
    assert setup.exporter is None
    with setup.provider.get_tracer("t").start_as_current_span("work") as span:
        assert span.get_span_context().is_valid
    setup.shutdown()


def test_the_resource_names_service_instance_version_and_namespace():
    attributes = telemetry.build("payments-worker", "payments-worker-2", env={}).provider.resource
    assert attributes.attributes["service.name"] == "payments-worker"
    assert attributes.attributes["service.instance.id"] == "payments-worker-2"
    assert attributes.attributes["service.namespace"] == "shopmesh"
    assert attributes.attributes["service.version"]


def test_an_endpoint_that_refuses_connections_drops_spans_without_raising(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    endpoint = f"http://127.0.0.1:{free_port()}"
    setup = telemetry.build("orders", "orders-1", env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert isinstance(setup.exporter, OTLPSpanExporter)
    with setup.provider.get_tracer("t").start_as_current_span("work"):
        pass
    setup.provider.force_flush(5000)
    setup.shutdown()
    failures = [r for r in caplog.records if r.getMessage().startswith("Failed to export")]
    assert failures and not any(r.exc_info for r in failures)  # no traceback


def test_export_complaints_are_let_through_once_per_interval():
    now = [0.0]
    quiet = telemetry.OncePerInterval(60.0, clock=lambda: now[0])
    record = logging.LogRecord("otel", logging.ERROR, __file__, 1, "Failed to export", (), None)
    passed = []
    for second in (0.0, 10.0, 59.0, 61.0, 62.0):
        now[0] = second
        passed.append(quiet.filter(record))
    assert passed == [True, False, False, True, False]


def test_order_id_goes_on_the_current_span():
    provider, exporter = recording()
    with provider.get_tracer("t").start_as_current_span("POST /orders"):
        telemetry.set_order_id("8f14e45f-0000-0000-0000-000000000000")
    (span,) = exporter.get_finished_spans()
    assert span.attributes[telemetry.ORDER_ID] == "8f14e45f-0000-0000-0000-000000000000"


# -- aiohttp server and client -----------------------------------------------------------------


async def with_app(provider, scenario):
    routes = web.RouteTableDef()
    seen = {}

    @routes.post("/orders/{id}/cancel")
    async def cancel(request: web.Request) -> web.Response:
        seen["trace_id"] = trace.get_current_span().get_span_context().trace_id
        telemetry.set_order_id(request.match_info["id"])
        return web.json_response({}, status=202)

    @routes.get("/orders/{id}/problem")
    async def problem(_request: web.Request) -> web.Response:
        raise Problem(422, "Invalid order", "no items")

    @routes.get("/boom")
    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = web.Application(
        middlewares=[telemetry.http_middleware(provider.get_tracer("t")), problem_middleware()]
    )
    app.add_routes(routes)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await scenario(client)
    return seen


def test_a_request_gets_a_server_span_that_continues_the_callers_traceparent():
    provider, exporter = recording()

    async def scenario(client):
        resp = await client.post("/orders/42/cancel", headers={"traceparent": TRACEPARENT})
        assert resp.status == 202

    seen = asyncio.run(with_app(provider, scenario))
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /orders/{id}/cancel"
    assert span.kind is SpanKind.SERVER
    assert span.context.trace_id == TRACE_ID == seen["trace_id"]
    assert span.parent.span_id == PARENT_SPAN_ID
    assert span.attributes["http.route"] == "/orders/{id}/cancel"
    assert span.attributes["http.response.status_code"] == 202
    assert span.attributes[telemetry.ORDER_ID] == "42"


def test_a_problem_response_names_the_trace_of_its_request():
    provider, exporter = recording()

    async def scenario(client):
        resp = await client.get("/orders/42/problem", headers={"traceparent": TRACEPARENT})
        assert resp.status == 422
        assert (await resp.json())["trace_id"] == f"{TRACE_ID:032x}"

    asyncio.run(with_app(provider, scenario))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["http.response.status_code"] == 422
    assert span.status.status_code is StatusCode.UNSET


def test_a_failing_handler_is_an_error_span():
    provider, exporter = recording()

    async def scenario(client):
        assert (await client.get("/boom")).status == 500

    asyncio.run(with_app(provider, scenario))
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /boom"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500


def test_an_aiohttp_client_call_inside_a_span_is_a_client_span_sent_as_traceparent():
    provider, exporter = recording()
    received = []

    async def echo(request: web.Request) -> web.Response:
        received.append(request.headers.get("traceparent"))
        return web.json_response({})

    async def go():
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", echo)
        async with TestServer(app, host="127.0.0.1") as server:
            trace_configs = [telemetry.client_trace_config(provider.get_tracer("t"))]
            async with aiohttp.ClientSession(trace_configs=trace_configs) as session:
                async with session.get(server.make_url("/.well-known/jwks.json")) as resp:
                    assert resp.status == 200  # outside any span: not traced
                with provider.get_tracer("t").start_as_current_span("POST /orders"):
                    async with session.get(server.make_url("/.well-known/jwks.json")) as resp:
                        assert resp.status == 200

    asyncio.run(go())
    span, parent = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.parent.span_id == parent.context.span_id
    assert span.attributes["http.response.status_code"] == 200
    assert received == [None, traceparent_of(span)]


# -- asyncpg -----------------------------------------------------------------------------------


def logged(query: str, elapsed: float = 0.25, exception=None) -> LoggedQuery:
    return LoggedQuery(query, (), None, elapsed, exception, ("127.0.0.1", 5432), None)


def test_a_query_inside_a_span_becomes_a_child_span_with_its_duration():
    provider, exporter = recording()
    record = telemetry.query_logger(provider.get_tracer("t"))
    with provider.get_tracer("t").start_as_current_span("handle") as parent:
        record(logged("SELECT id\n  FROM orders WHERE id = $1"))
        record(logged("UPDATE orders SET x = $1", exception=ValueError("boom")))
    select, update, _ = exporter.get_finished_spans()
    assert select.name == "SELECT"
    assert select.parent.span_id == parent.get_span_context().span_id
    assert select.attributes["db.query.text"] == "SELECT id FROM orders WHERE id = $1"
    assert select.attributes["server.port"] == 5432
    assert select.end_time - select.start_time == 250_000_000
    assert update.status.status_code is StatusCode.ERROR


def test_transaction_statements_are_named_without_semicolon():
    provider, exporter = recording()
    record = telemetry.query_logger(provider.get_tracer("t"))
    with provider.get_tracer("t").start_as_current_span("handle"):
        record(logged("BEGIN;"))
    begin, _ = exporter.get_finished_spans()
    assert begin.name == "BEGIN"


def test_a_query_outside_any_span_is_not_traced():
    provider, exporter = recording()
    telemetry.query_logger(provider.get_tracer("t"))(logged("SELECT 1"))
    assert exporter.get_finished_spans() == ()


# -- gRPC client -------------------------------------------------------------------------------


def test_the_upstream_channel_sends_its_client_span_as_traceparent_metadata():
    provider, exporter = recording()
    received = []

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        received.append(dict(context.invocation_metadata()).get("traceparent"))
        return request

    async def go():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with upstream_channel(port, tracer_provider=provider) as channel:
                with provider.get_tracer("t").start_as_current_span("POST /orders") as parent:
                    reply = await channel.unary_unary("/test.Echo/Call")(b"hi", timeout=5)
            return reply, parent
        finally:
            await server.stop(0)

    reply, parent = asyncio.run(go())
    assert reply == b"hi"
    client_span = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert client_span.parent.span_id == parent.get_span_context().span_id
    assert received == [traceparent_of(client_span)]


# -- logs --------------------------------------------------------------------------------------


def log_line(**extra) -> dict:
    rec = logging.getLogger("test").makeRecord(
        "test", logging.INFO, __file__, 1, "order created", (), None, extra=extra
    )
    return json.loads(JsonFormatter("orders", "orders-1").format(rec))


def test_a_log_line_inside_a_span_carries_its_trace_and_span_id():
    provider, _ = recording()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        line = log_line(order_id="8f14e45f")
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["order_id"] == "8f14e45f"


def test_a_log_line_outside_any_span_has_no_trace_fields():
    line = log_line()
    assert "trace_id" not in line and "span_id" not in line


def test_the_access_log_carries_the_requests_trace_after_its_span_ended():
    provider, exporter = recording()
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(JsonFormatter("orders", "orders-1").format(record)))

    access = logging.getLogger("test.access")
    access.addHandler(Capture())
    access.setLevel(logging.DEBUG)  # a successful request is logged at debug

    async def orders(_request: web.Request) -> web.Response:
        return web.json_response([])

    async def go():
        app = web.Application(middlewares=[telemetry.http_middleware(provider.get_tracer("t"))])
        app.router.add_get("/orders", orders)
        runner = web.AppRunner(app, access_log_class=JsonAccessLogger, access_log=access)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{site.name}/orders") as resp,
            ):
                assert resp.status == 200
        finally:
            await runner.cleanup()

    asyncio.run(go())
    (span,) = exporter.get_finished_spans()
    (line,) = [line for line in lines if line["msg"] == "request"]
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


def test_a_query_in_an_unsampled_trace_is_not_traced():
    provider, exporter = recording()
    unsampled = NonRecordingSpan(
        SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(0))
    )
    with trace.use_span(unsampled):
        telemetry.query_logger(provider.get_tracer("t"))(logged("SELECT 1"))
    assert exporter.get_finished_spans() == ()
