"""RED metrics (rate, errors, duration) for every HTTP route and gRPC method of a service.

Names follow CONVENTIONS: prefix `shopmesh_`, base units, labels `service`, `route` (the route
template, never the raw path, so ids do not explode the series count), `method`, `status`.
The buckets resolve the brief's targets: gateway p95 ≤ 200 ms, a service ≤ 300 ms.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import Counter, Histogram, start_http_server

from services.common import rpc

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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observe(service: str, route: str, method: str, status: str, seconds: float) -> None:
    REQUESTS.labels(service, route, method, status).inc()
    DURATION.labels(service, route, method).observe(seconds)


def route_template(request: web.Request) -> str:
    """The matched route's template (`/orders/{id}`), or `unmatched`."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def http_middleware(service: str) -> Callable[[web.Request, Handler], Awaitable[Any]]:
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
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        service = self._service

        def done(context: grpc.aio.ServicerContext, started: float) -> None:
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else "OK"
            observe(service, method, "POST", status, time.perf_counter() - started)

        def unary(behavior: rpc.Behavior) -> rpc.Behavior:
            async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    return await behavior(request, context)
                finally:
                    done(context, started)

            return measured

        def streaming(behavior: rpc.Behavior) -> rpc.Behavior:
            async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    done(context, started)

            return measured

        return rpc.wrap_handler(handler, unary_response=unary, streaming_response=streaming)


def serve_metrics(host: str, port: int | None) -> None:
    """Expose /metrics on the instance's own metrics port (a thread; nothing if no port)."""
    if port is not None:
        start_http_server(port, addr=host)
