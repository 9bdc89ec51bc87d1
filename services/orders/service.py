"""Use cases of the orders service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.orders import repository
from services.orders.domain import Order, OrderItem, new_order

log = logging.getLogger(__name__)


class IdempotencyKeyReusedError(Exception):
    """The Idempotency-Key was already used for a request with a different body."""


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    replayed: bool


def request_hash(user_id: str, items: Sequence[OrderItem]) -> str:
    """A fingerprint of an order request, independent of JSON formatting and key order."""
    canonical = json.dumps(
        {"userId": user_id, "items": [item.to_json() for item in items]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def place_order(
        self, user_id: str, items: Sequence[OrderItem], *, idempotency_key: str | None = None
    ) -> PlacedOrder:
        """Store a new order, or return the one an earlier request with the same key created.

        The key claim and the order are written in one transaction; a concurrent request with
        the same key waits on the key's unique constraint and then replays the winner's order.
        """
        order = new_order(user_id, items)
        fingerprint = request_hash(user_id, order.items)
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

    async def _settle_payment(self, order: Order) -> Order:
        """The payment step of placing an order.

        Payments are not wired in yet, so a new order stays PENDING. This is where the
        synchronous payments.ProcessPayment call and the queued fallback will go.
        """
        return order
