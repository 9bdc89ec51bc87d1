"""The BFF's HTTP entrypoints under /web/api (every one needs the edge's internal token, which
it passes on): parse, call the upstreams, join; their refusals are domain errors, answered as
problem+json by services.common.problem's middleware."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import web

from services.common.auth.middleware import request_principal
from services.common.auth.principal import ADMIN_ROLE, require_role
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.common.jsonbody import read_json_object
from services.common.problem import ProblemKinds
from services.web.admin import ConsulAdmin, UsersAdmin, fault_value, service_name
from services.web.clients import JaegerClient, NotificationsClient, OrdersClient, PaymentsClient
from services.web.views import order_view
from services.web.waterfall import first_trace, trace_page, waterfall

ORDERS = web.AppKey("orders", OrdersClient)
PAYMENTS = web.AppKey("payments", PaymentsClient)
NOTIFICATIONS = web.AppKey("notifications", NotificationsClient)
JAEGER = web.AppKey("jaeger", JaegerClient)
# Jaeger's UI as the browser reaches it, or None where there is none (the native Jaeger's).
JAEGER_UI = web.AppKey[str | None]("jaeger_ui")
USERS = web.AppKey("users", UsersAdmin)
CONSUL = web.AppKey("consul", ConsulAdmin)

PROBLEMS: ProblemKinds = {}
MAX_REASON_LENGTH = 200

routes = web.RouteTableDef()


@routes.get("/me")
async def me(request: web.Request) -> web.Response:
    """Who the page's user is: the page shows admin controls only to admins (the admin API
    refuses everyone else anyway)."""
    principal = request_principal(request)
    return web.json_response(
        {
            "sub": principal.sub,
            "roles": sorted(principal.roles),
            "admin": principal.has_role(ADMIN_ROLE),
        }
    )


@routes.get("/orders/{id}")
async def order(request: web.Request) -> web.Response:
    """The order, its payment and its notifications in one answer. Payments down leaves the
    payment out (with `paymentError`), not the view."""
    principal = request_principal(request)
    order_id = _order_id(request)
    found = await request.app[ORDERS].order(order_id, principal)
    payment, payment_error = None, None
    notifications_call = request.app[NOTIFICATIONS].history(str(found["userId"]), principal)
    if found.get("paymentId"):
        payment_call = request.app[PAYMENTS].payment(str(found["paymentId"]), principal)
        paid, history = await asyncio.gather(
            payment_call, notifications_call, return_exceptions=True
        )
        if isinstance(paid, Unavailable):
            payment_error = str(paid)
        elif isinstance(paid, BaseException):
            raise paid
        else:
            payment = paid
    else:
        history = await asyncio.gather(notifications_call, return_exceptions=True)
        history = history[0]
    if isinstance(history, BaseException):
        raise history
    return web.json_response(order_view(found, payment, history, payment_error=payment_error))


@routes.get("/orders/{id}/trace")
async def order_trace(request: web.Request) -> web.Response:
    """The trace that created the order, shaped for a waterfall, with its page in Jaeger's UI
    where there is one. The order is read first with the caller's token: nobody sees the trace
    of an order they may not see."""
    principal = request_principal(request)
    order_id = _order_id(request)
    await request.app[ORDERS].order(order_id, principal)
    trace = first_trace(await request.app[JAEGER].traces_of_order(order_id))
    if trace is None:
        raise NotFound(f"Jaeger has no trace of order {order_id} (yet: spans arrive in seconds)")
    view = waterfall(trace)
    view["jaegerUi"] = trace_page(request.app[JAEGER_UI], str(view["traceId"]))
    return web.json_response(view)


@routes.get("/admin/health")
async def health(request: web.Request) -> web.Response:
    require_role(request_principal(request), ADMIN_ROLE)
    consul = request.app[CONSUL]
    instances, faults = await asyncio.gather(consul.health(), consul.faults())
    return web.json_response({"instances": instances, "faults": faults})


@routes.post("/admin/users/{id}/block")
async def block_user(request: web.Request) -> web.Response:
    principal = request_principal(request)
    require_role(principal, ADMIN_ROLE)
    payload = await read_json_object(request)
    reason = payload.get("reason", "blocked by an admin")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument(
            "reason", f"must be a string of at most {MAX_REASON_LENGTH} characters"
        )
    user = await request.app[USERS].block(request.match_info["id"], reason, principal)
    return web.json_response(user)


@routes.put("/admin/faults/{service}")
async def set_fault(request: web.Request) -> web.Response:
    require_role(request_principal(request), ADMIN_ROLE)
    service = service_name(request.match_info["service"])
    value = fault_value(await read_json_object(request))
    await request.app[CONSUL].set_fault(service, value)
    return web.json_response({"service": service, "faults": json.loads(value)})


@routes.delete("/admin/faults/{service}")
async def clear_fault(request: web.Request) -> web.Response:
    require_role(request_principal(request), ADMIN_ROLE)
    await request.app[CONSUL].clear_fault(service_name(request.match_info["service"]))
    return web.Response(status=204)


def _order_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidArgument("id", "must be an order id (a UUID)") from None
