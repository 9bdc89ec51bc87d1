"""A bound on the requests one service process works on at once; past it, a 503 problem at once.

In the mesh a service's port is reached through its sidecar, and the callers' sidecars already
bound what they send (docs/mesh-config.md), so this bound is not reached there. It holds for
what reaches the port without them, the benchmark's `direct` scenario among them: 1500/s offered
straight to orders for 20 s had every request wait for one of its ten database connections, up
to the client's timeout, and left the process holding 168 MB after the load (83 MB before).
A WebSocket is not counted: it holds its request for as long as it is open.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from services.common.problem import UNAVAILABLE, Problem

MAX_IN_FLIGHT = 256


def in_flight_middleware(limit: int = MAX_IN_FLIGHT) -> Middleware:
    in_flight = 0
    refused = Problem(
        503,
        "Service Unavailable",
        f"this instance is working on {limit} requests; retry later",
        type=UNAVAILABLE,
        headers={"Retry-After": "1"},
    )

    @web.middleware
    async def bounded(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return await handler(request)
        if in_flight >= limit:
            return refused.to_response(request.path)
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return bounded
