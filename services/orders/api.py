"""HTTP entrypoints: parse and validate, call the service layer; its errors are domain errors,
which services.common.problem's middleware answers as the problems PROBLEMS describes."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.common.auth.middleware import request_principal
from services.common.auth.principal import require_self_or_admin
from services.common.errors import PermissionDenied
from services.common.fields import character_error
from services.common.jsonbody import read_json_object
from services.common.problem import (
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED,
    ORDER_NOT_CANCELLABLE,
    ORDER_NOT_FOUND,
    UNKNOWN_USER,
    USER_BLOCKED,
    VALIDATION,
    Problem,
    ProblemKind,
    ProblemKinds,
)
from services.common.telemetry import set_order_id
from services.orders import validation
from services.orders.domain import OrderItem, OrderStatus
from services.orders.service import (
    IdempotencyKeyReusedError,
    OrderNotCancellable,
    OrderNotFound,
    OrderService,
    UnknownUserError,
    UserBlockedError,
)

SERVICE = web.AppKey("orders_service", OrderService)
MAX_IDEMPOTENCY_KEY_LENGTH = 200

# The problems of the service layer's own errors (the common ones: COMMON_KINDS).
PROBLEMS: ProblemKinds = {
    IdempotencyKeyReusedError: ProblemKind(422, "Idempotency key reused", IDEMPOTENCY_KEY_REUSED),
    UnknownUserError: ProblemKind(422, "Unknown user", UNKNOWN_USER),
    UserBlockedError: ProblemKind(403, "User blocked", USER_BLOCKED),
    OrderNotFound: ProblemKind(404, "Order not found", ORDER_NOT_FOUND),
    OrderNotCancellable: ProblemKind(409, "Order cannot be cancelled", ORDER_NOT_CANCELLABLE),
}

routes = web.RouteTableDef()


@routes.get("/orders")
async def list_orders(request: web.Request) -> web.Response:
    user_id = request.query.get("userId")
    if user_id is None:
        errors = [{"field": "userId", "message": "is required"}]
    else:
        errors = validation.user_id_errors(user_id)
    if user_id is None or errors:
        raise Problem(
            400,
            "Malformed request",
            f"query parameter {validation.describe(errors)}",
            type=MALFORMED,
            errors=errors,
        )
    require_self_or_admin(request_principal(request), user_id)
    orders = await request.app[SERVICE].list_orders(user_id)
    return web.json_response([order.to_json() for order in orders])


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    idempotency_key = _idempotency_key(request)
    payload = await read_json_object(request)
    errors = validation.create_order_errors(payload)
    if errors:
        raise Problem(
            422,
            "Invalid order",
            validation.describe(errors),
            type=VALIDATION,
            errors=errors,
        )
    require_self_or_admin(request_principal(request), payload["userId"])
    items = [OrderItem(item["productId"], item["quantity"]) for item in payload["items"]]
    respond_async = prefers_respond_async(request.headers.getall("Prefer", []))
    placed = await request.app[SERVICE].place_order(
        payload["userId"], items, idempotency_key=idempotency_key, respond_async=respond_async
    )
    set_order_id(placed.order.id)
    headers = {"Location": f"/orders/{placed.order.id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
        return web.json_response(placed.order.to_json(), status=201, headers=headers)
    if respond_async:
        # RFC 7240: the payment was queued, not attempted; the order is PAYMENT_PENDING.
        headers["Preference-Applied"] = "respond-async"
        return web.json_response(placed.order.to_json(), status=202, headers=headers)
    return web.json_response(placed.order.to_json(), status=201, headers=headers)


def prefers_respond_async(values: list[str]) -> bool:
    """Whether a `Prefer` header (RFC 7240, possibly several, comma-separated) asks for
    respond-async; preference names are case-insensitive."""
    for value in values:
        for preference in value.split(","):
            name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if name == "respond-async":
                return True
    return False


@routes.get("/orders/{id}")
async def get_order(request: web.Request) -> web.Response:
    order_id = _order_id(request)
    order = None if order_id is None else await request.app[SERVICE].get_order(order_id)
    if order is None or not _may_see(request, order.user_id):
        raise OrderNotFound()
    set_order_id(order.id)
    return web.json_response(order.to_json())


@routes.post("/orders/{id}/cancel")
async def cancel_order(request: web.Request) -> web.Response:
    order_id = _order_id(request)
    existing = None if order_id is None else await request.app[SERVICE].get_order(order_id)
    if existing is None or not _may_see(request, existing.user_id):
        raise OrderNotFound()
    set_order_id(existing.id)
    order = await request.app[SERVICE].cancel_order(existing.id)
    if order is None:
        raise OrderNotFound()
    if order.status != OrderStatus.CANCELLED:
        raise OrderNotCancellable(order.status)
    return web.json_response(order.to_json())


def _may_see(request: web.Request, owner: str) -> bool:
    """Another user's order is reported as not found: its existence is not theirs to know."""
    try:
        require_self_or_admin(request_principal(request), owner)
    except PermissionDenied:
        return False
    return True


def _order_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        return None


@routes.get("/openapi.yaml")
async def openapi(_request: web.Request) -> web.Response:
    return web.Response(text=validation.spec_text(), content_type="application/yaml")


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    problem = None
    if not key.strip():
        problem = "must not be empty"
    elif len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        problem = f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
    else:
        # aiohttp hands header bytes that are not UTF-8 over as lone surrogates.
        problem = character_error(key)
    if problem is not None:
        raise Problem(
            400,
            "Malformed request",
            f"header Idempotency-Key {problem}",
            type=MALFORMED,
            errors=[{"field": "Idempotency-Key", "message": problem}],
        )
    return key
