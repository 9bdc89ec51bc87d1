"""SQL for orders and idempotency keys (asyncpg). Thin: transactions belong to the service layer,
which opens them through `PostgresOrdersDatabase.transaction()`."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager

import asyncpg

from services.common.db import Connection
from services.common.uow import PostgresOutbox, PostgresTransactions
from services.orders.domain import IdempotencyRecord, Order, OrderItem, OrderStatus

_INSERT_COLUMNS = "id, user_id, status, items, total_price, currency, created_at"
_ORDER_COLUMNS = f"{_INSERT_COLUMNS}, payment_id, status_reason"

Executor = Connection | asyncpg.Pool


class PostgresOrders:
    """Orders and idempotency keys on `db`: the pool (each statement on its own) or the
    connection of a transaction."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def add(self, order: Order) -> None:
        await self._db.execute(
            f"INSERT INTO orders ({_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            order.id,
            order.user_id,
            order.status.value,
            [{"product_id": item.product_id, "quantity": item.quantity} for item in order.items],
            order.total_price,
            order.currency,
            order.created_at,
        )

    async def get(self, order_id: uuid.UUID) -> Order | None:
        row = await self._db.fetchrow(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = $1", order_id
        )
        return None if row is None else _order(row)

    async def list_for_user(self, user_id: str) -> list[Order]:
        rows = await self._db.fetch(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [_order(row) for row in rows]

    async def update_status(self, order: Order, expected: list[OrderStatus]) -> Order | None:
        """Write `order`'s status if the stored one is still in `expected`; None if it moved on."""
        row = await self._db.fetchrow(
            f"""
            UPDATE orders SET status = $2, payment_id = $3, status_reason = $4, updated_at = now()
            WHERE id = $1 AND status = ANY($5::text[])
            RETURNING {_ORDER_COLUMNS}
            """,
            order.id,
            order.status.value,
            order.payment_id,
            order.status_reason,
            [status.value for status in expected],
        )
        return None if row is None else _order(row)

    async def claim_idempotency_key(self, key: str, request_hash: str, order_id: uuid.UUID) -> bool:
        """Record `key` for `order_id`; False if the key already exists.

        A concurrent claim of the same key waits for the first transaction and then sees its row.
        """
        claimed = await self._db.fetchval(
            """
            INSERT INTO idempotency_keys (key, request_hash, order_id) VALUES ($1, $2, $3)
            ON CONFLICT (key) DO NOTHING
            RETURNING true
            """,
            key,
            request_hash,
            order_id,
        )
        return bool(claimed)

    async def find_idempotency_key(self, key: str) -> IdempotencyRecord | None:
        row = await self._db.fetchrow(
            "SELECT request_hash, order_id FROM idempotency_keys WHERE key = $1", key
        )
        return None if row is None else IdempotencyRecord(row["request_hash"], row["order_id"])


class PostgresOrdersUnitOfWork:
    """Orders and the outbox on the connection of one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.orders = PostgresOrders(conn)
        self.outbox = PostgresOutbox(conn)


class PostgresOrdersDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.orders = PostgresOrders(pool)
        self._transactions = PostgresTransactions(pool, PostgresOrdersUnitOfWork)

    def transaction(self) -> AbstractAsyncContextManager[PostgresOrdersUnitOfWork]:
        return self._transactions.transaction()


def _order(row: asyncpg.Record) -> Order:
    return Order(
        id=row["id"],
        user_id=row["user_id"],
        status=OrderStatus(row["status"]),
        items=tuple(OrderItem(item["product_id"], item["quantity"]) for item in row["items"]),
        total_price=row["total_price"],
        currency=row["currency"],
        created_at=row["created_at"],
        payment_id=row["payment_id"],
        status_reason=row["status_reason"],
    )
