"""HTTP and WebSocket entrypoints: authenticate, parse, call the service layer; its errors are
domain errors, which services.common.problem's middleware answers as PROBLEMS describes."""

from __future__ import annotations

import uuid

from aiohttp import web

from services.common.auth.middleware import PRINCIPAL
from services.common.auth.principal import Principal
from services.common.errors import PermissionDenied
from services.common.problem import (
    MALFORMED,
    UNAUTHENTICATED,
    UPGRADE_REQUIRED,
    Problem,
    ProblemKind,
    ProblemKinds,
)
from services.notifications.domain import UnknownCursorError, describe, user_id_error
from services.notifications.hub import Hub
from services.notifications.service import NotificationService

SERVICE = web.AppKey("notifications_service", NotificationService)
HUB = web.AppKey("notifications_hub", Hub)

ADMIN_ROLE = "admin"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_LIMIT_DIGITS = 16
# Clients send nothing but control frames; anything larger than this closes with 1009.
CLIENT_MESSAGE_MAX_BYTES = 4096

# The problems of the service layer's own errors (the common ones: COMMON_KINDS).
PROBLEMS: ProblemKinds = {UnknownCursorError: ProblemKind(400, "Malformed request", MALFORMED)}

routes = web.RouteTableDef()


def current_user(request: web.Request) -> str | None:
    """The authenticated user's id: the `sub` of the principal set by the auth middleware."""
    principal = _principal(request)
    return None if principal is None else principal.sub


def is_admin(request: web.Request) -> bool:
    principal = _principal(request)
    return principal is not None and ADMIN_ROLE in principal.roles


def _principal(request: web.Request) -> Principal | None:
    """The caller (with `sub` and `roles`) the auth middleware put on the request, or None."""
    return request.get(PRINCIPAL)


@routes.get("/notifications/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    user_id = _authenticated(request)
    hub = request.app[HUB]
    # No permessage-deflate: messages are small, and it costs a zlib context per connection.
    socket = web.WebSocketResponse(
        heartbeat=hub.heartbeat_s, compress=False, max_msg_size=CLIENT_MESSAGE_MAX_BYTES
    )
    if not socket.can_prepare(request).ok:
        raise Problem(
            426,
            "Upgrade Required",
            "/notifications/ws is a WebSocket endpoint; send Upgrade: websocket",
            type=UPGRADE_REQUIRED,
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    await socket.prepare(request)
    connection = hub.connect(user_id, socket, request.transport)
    try:
        # Clients have nothing to say; reading handles their pongs and their close.
        async for _message in socket:
            continue
    finally:
        await hub.disconnect(connection)
    return socket


@routes.get("/notifications")
async def history(request: web.Request) -> web.Response:
    user_id = _authenticated(request)
    query = request.query
    errors: list[dict[str, str]] = []
    target = query.get("userId", user_id)
    if "userId" in query and (message := user_id_error(target)) is not None:
        errors.append({"field": "userId", "message": message})
    limit = _limit(query.get("limit"), errors)
    after = _after(query.get("after"), errors)
    if errors:
        raise Problem(
            400,
            "Malformed request",
            f"query parameter {describe(errors)}",
            type=MALFORMED,
            errors=errors,
        )
    if target != user_id and not is_admin(request):
        raise PermissionDenied("only admins may read another user's notifications")
    notifications = await request.app[SERVICE].history(target, limit=limit, after=after)
    return web.json_response([notification.to_json() for notification in notifications])


def _authenticated(request: web.Request) -> str:
    user_id = current_user(request)
    if user_id is None:
        raise Problem(
            401,
            "Unauthorized",
            "this endpoint needs an authenticated user",
            type=UNAUTHENTICATED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user_id


def _limit(raw: str | None, errors: list[dict[str, str]]) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    # Few enough digits for int(), which refuses more than 4300.
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_LIMIT_DIGITS:
        limit = int(raw)
        if 1 <= limit <= MAX_LIMIT:
            return limit
    errors.append({"field": "limit", "message": f"must be an integer from 1 to {MAX_LIMIT}"})
    return DEFAULT_LIMIT


def _after(raw: str | None, errors: list[dict[str, str]]) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        errors.append({"field": "after", "message": "must be a notification id (a UUID)"})
        return None
