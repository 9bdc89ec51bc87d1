"""Use cases of the orders service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from services.common.events import cloud_event
from services.orders import repository
from services.orders.clients import (
    PaymentOutcome,
    PaymentResult,
    UpstreamUnavailable,
    UserInfo,
)
from services.orders.domain import Order, OrderItem, OrderStatus, new_order, sources_of

log = logging.getLogger(__name__)


class IdempotencyKeyReusedError(Exception):
    """The Idempotency-Key was already used for a request with a different body."""


class UserBlockedError(Exception):
    """The user exists but is blocked: no new orders."""


class Users(Protocol):
    async def get_user(self, user_id: str) -> UserInfo: ...


class Payments(Protocol):
    async def process_payment(
        self, order_id: uuid.UUID, user_id: str, amount: int, currency: str
    ) -> PaymentOutcome: ...


class StatusNotifier(Protocol):
    async def order_status_changed(self, event: dict) -> None: ...


class PaymentFallback(Protocol):
    """Where an order goes when the synchronous payment could not be made."""

    async def request_payment(self, order: Order) -> None: ...


class LeavePending:
    """The fallback until the payment queue exists: the order stays PAYMENT_PENDING."""

    async def request_payment(self, order: Order) -> None:
        log.warning("payment left pending: no payment queue yet", extra={"order_id": str(order.id)})


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    replayed: bool


def status_changed_event(order: Order) -> dict:
    data = {"orderId": str(order.id), "userId": order.user_id, "status": order.status.value}
    if order.status_reason:
        data["statusReason"] = order.status_reason
    return cloud_event(
        source="orders",
        type="shopmesh.order.status_changed.v1",
        subject=f"order/{order.id}",
        data=data,
    )


def request_hash(user_id: str, items: Sequence[OrderItem]) -> str:
    """A fingerprint of an order request, independent of JSON formatting and key order."""
    canonical = json.dumps(
        {"userId": user_id, "items": [item.to_json() for item in items]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        users: Users,
        payments: Payments,
        notifier: StatusNotifier,
        fallback: PaymentFallback | None = None,
    ) -> None:
        self._pool = pool
        self._users = users
        self._payments = payments
        self._notifier = notifier
        self._fallback = fallback or LeavePending()

    async def place_order(
        self, user_id: str, items: Sequence[OrderItem], *, idempotency_key: str | None = None
    ) -> PlacedOrder:
        """Store a new order, or return the one an earlier request with the same key created.

        The key claim and the order are written in one transaction; a concurrent request with
        the same key waits on the key's unique constraint and then replays the winner's order.
        """
        order = new_order(user_id, items)
        fingerprint = request_hash(user_id, order.items)
        if idempotency_key is not None:
            async with self._pool.acquire() as conn:
                if await repository.find_idempotency_key(conn, idempotency_key):
                    replayed = await self._replay(conn, idempotency_key, fingerprint)
                    return PlacedOrder(replayed, replayed=True)
        user = await self._users.get_user(user_id)
        if user.blocked:
            raise UserBlockedError(user_id)
        async with self._pool.acquire() as conn, conn.transaction():
            if idempotency_key is not None and not await repository.claim_idempotency_key(
                conn, idempotency_key, fingerprint, order.id
            ):
                return PlacedOrder(
                    await self._replay(conn, idempotency_key, fingerprint), replayed=True
                )
            await repository.insert_order(conn, order)
        log.info(
            "order created",
            extra={
                "order_id": str(order.id),
                "user_id": order.user_id,
                "total_price": order.total_price,
                "currency": order.currency,
            },
        )
        return PlacedOrder(await self._settle_payment(order), replayed=False)

    async def get_order(self, order_id: uuid.UUID) -> Order | None:
        return await repository.get_order(self._pool, order_id)

    async def list_orders(self, user_id: str) -> list[Order]:
        return await repository.list_orders_for_user(self._pool, user_id)

    async def database_ready(self, *, timeout_s: float = 0.8) -> bool:
        """Whether the database answers SELECT 1 within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s), self._pool.acquire() as conn:
                await repository.ping(conn, timeout_s=timeout_s)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("database not ready", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False
        return True

    async def _replay(
        self, conn: asyncpg.Connection, idempotency_key: str, fingerprint: str
    ) -> Order:
        record = await repository.find_idempotency_key(conn, idempotency_key)
        if record is None:
            raise RuntimeError("an idempotency key that could not be claimed is missing")
        if record.request_hash != fingerprint:
            raise IdempotencyKeyReusedError(idempotency_key)
        order = await repository.get_order(conn, record.order_id)
        if order is None:
            raise RuntimeError(f"idempotency key refers to missing order {record.order_id}")
        log.info("order replayed for idempotency key", extra={"order_id": str(order.id)})
        return order

    async def cancel_order(self, order_id: uuid.UUID) -> Order | None:
        """Cancel an order that is not settled yet; InvalidTransition once it is paid or failed."""
        order = await repository.get_order(self._pool, order_id)
        if order is None or order.status == OrderStatus.CANCELLED:
            return order
        return await self._move(order, OrderStatus.CANCELLED)

    async def _settle_payment(self, order: Order) -> Order:
        """Charge the order synchronously; if payments cannot answer, hand it to the fallback."""
        try:
            outcome = await self._payments.process_payment(
                order.id, order.user_id, order.total_price, order.currency
            )
        except UpstreamUnavailable as exc:
            log.warning(
                "payment deferred",
                extra={"order_id": str(order.id), "code": exc.code.name, "error": str(exc)},
            )
            return await self._defer(order, f"payments unavailable ({exc.code.name})")
        if outcome.result == PaymentResult.SUCCEEDED:
            return await self._move(order, OrderStatus.PAID, payment_id=outcome.payment_id)
        if outcome.result == PaymentResult.DECLINED:
            return await self._move(
                order,
                OrderStatus.FAILED,
                payment_id=outcome.payment_id,
                reason=outcome.decline_reason,
            )
        return await self._defer(order, "payment still processing")

    async def _defer(self, order: Order, reason: str) -> Order:
        pending = await self._move(order, OrderStatus.PAYMENT_PENDING, reason=reason)
        if pending.status == OrderStatus.PAYMENT_PENDING:
            await self._fallback.request_payment(pending)
        return pending

    async def _move(
        self,
        order: Order,
        status: OrderStatus,
        *,
        payment_id: str | None = None,
        reason: str | None = None,
    ) -> Order:
        """Apply a transition unless a concurrent one (a cancel, say) got there first."""
        wanted = order.moved_to(status, payment_id=payment_id, reason=reason)
        stored = await repository.update_status(self._pool, wanted, sources_of(status))
        if stored is not None:
            log.info("order status changed", extra={"order_id": str(order.id), "status": status})
            await self._notifier.order_status_changed(status_changed_event(stored))
            return stored
        current = await repository.get_order(self._pool, order.id)
        if current is None:
            raise RuntimeError(f"order {order.id} vanished during a status change")
        return current
