"""Thin adapters for what the BFF calls, each through this instance's sidecar with the
caller's internal token (never one of its own): orders and notifications (REST), payments
(gRPC); and Jaeger's query API, which is outside the mesh."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import grpc
from google.protobuf.json_format import MessageToDict

from services.common.auth.outgoing import bearer_headers, bearer_metadata
from services.common.auth.principal import Principal
from services.common.errors import NotFound, PermissionDenied, Unavailable
from services.common.grpc_client import call_with_retries, upstream_channel
from services.common.jaeger_trace import ORDER_ID_TAG, ORDER_SERVICE
from services.common.telemetry import client_trace_config
from shopmesh.payments.v1 import payments_pb2, payments_pb2_grpc

UPSTREAM_TIMEOUT_S = 5.0
PAYMENTS_BUDGET_S = 2.0
NOTIFICATIONS_LIMIT = 100
TRACES_LIMIT = 20


def http_session() -> aiohttp.ClientSession:
    """One session per upstream: each call gets a CLIENT span, its traceparent goes out."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
        trace_configs=[client_trace_config()],
    )


async def _get_json(
    session: aiohttp.ClientSession,
    upstream: str,
    url: str,
    principal: Principal | None,
    params: Mapping[str, str] | None = None,
) -> Any:
    """GET `url`: its JSON on 200; the upstream's refusal as the domain error it means."""
    headers = bearer_headers(principal) if principal is not None else {}
    try:
        async with session.get(url, params=params or {}, headers=headers) as response:
            if response.status == 200:
                return await response.json(content_type=None)
            detail = await _detail(response)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"{upstream} did not answer ({type(exc).__name__})") from exc
    if response.status == 404:
        raise NotFound(detail or f"{upstream}: not found")
    if response.status == 403:
        raise PermissionDenied(detail or f"{upstream}: forbidden")
    raise Unavailable(f"{upstream} answered {response.status}")


async def _detail(response: aiohttp.ClientResponse) -> str | None:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None


class OrdersClient:
    def __init__(self, port: int) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._session = http_session()

    async def order(self, order_id: str, principal: Principal) -> dict[str, Any]:
        order: dict[str, Any] = await _get_json(
            self._session, "orders", f"{self._base}/orders/{order_id}", principal
        )
        return order

    async def close(self) -> None:
        await self._session.close()


class NotificationsClient:
    def __init__(self, port: int) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._session = http_session()

    async def history(self, user_id: str, principal: Principal) -> list[dict[str, Any]]:
        """The user's newest notifications (admins may read another user's)."""
        items: list[dict[str, Any]] = await _get_json(
            self._session,
            "notifications",
            f"{self._base}/notifications",
            principal,
            {"userId": user_id, "limit": str(NOTIFICATIONS_LIMIT)},
        )
        return items

    async def close(self) -> None:
        await self._session.close()


class PaymentsClient:
    def __init__(self, port: int) -> None:
        self._channel = upstream_channel(port)
        self._stub = payments_pb2_grpc.PaymentServiceStub(self._channel)

    async def payment(self, payment_id: str, principal: Principal) -> dict[str, Any] | None:
        """The payment as JSON (the names of the REST API), None if payments has none."""
        request = payments_pb2.GetPaymentRequest(payment_id=payment_id)
        try:
            payment = await call_with_retries(
                self._stub.GetPayment,
                request,
                budget_s=PAYMENTS_BUDGET_S,
                metadata=bearer_metadata(principal),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(exc.details() or "payments: forbidden") from exc
            raise Unavailable(f"payments unavailable: {exc.code().name}") from exc
        return MessageToDict(payment, always_print_fields_with_no_presence=True)

    async def close(self) -> None:
        await self._channel.close()


class JaegerClient:
    """Jaeger's HTTP query API (the one its UI uses): not in the mesh, so called directly."""

    def __init__(self, base_url: str | None) -> None:
        self._base = base_url
        self._session = http_session()

    async def traces_of_order(self, order_id: str) -> list[Mapping[str, Any]]:
        """The traces in which orders handled `order_id`."""
        if self._base is None:
            raise Unavailable("this deployment runs no Jaeger")
        found = await _get_json(
            self._session,
            "jaeger",
            f"{self._base}/api/traces",
            None,
            {
                "service": ORDER_SERVICE,
                "tags": json.dumps({ORDER_ID_TAG: order_id}),
                "limit": str(TRACES_LIMIT),
            },
        )
        traces: list[Mapping[str, Any]] = found.get("data") or []
        return traces

    async def close(self) -> None:
        await self._session.close()
