"""SQL for orders and idempotency keys. Thin: transactions belong to the service layer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from services.orders.domain import Order, OrderItem, OrderStatus

_INSERT_COLUMNS = "id, user_id, status, items, total_price, currency, created_at"
_ORDER_COLUMNS = f"{_INSERT_COLUMNS}, payment_id, status_reason"


@dataclass(frozen=True)
class IdempotencyRecord:
    request_hash: str
    order_id: uuid.UUID


async def insert_order(conn: asyncpg.Connection, order: Order) -> None:
    await conn.execute(
        f"INSERT INTO orders ({_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        order.id,
        order.user_id,
        order.status.value,
        [{"product_id": item.product_id, "quantity": item.quantity} for item in order.items],
        order.total_price,
        order.currency,
        order.created_at,
    )


async def get_order(conn: asyncpg.Connection | asyncpg.Pool, order_id: uuid.UUID) -> Order | None:
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = $1", order_id)
    return None if row is None else _order(row)


async def list_orders_for_user(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: str
) -> list[Order]:
    rows = await conn.fetch(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at, id",
        user_id,
    )
    return [_order(row) for row in rows]


async def update_status(
    conn: asyncpg.Connection | asyncpg.Pool, order: Order, expected: list[OrderStatus]
) -> Order | None:
    """Write `order`'s status if the stored one is still in `expected`; None if it moved on."""
    row = await conn.fetchrow(
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


async def claim_idempotency_key(
    conn: asyncpg.Connection, key: str, request_hash: str, order_id: uuid.UUID
) -> bool:
    """Record `key` for `order_id`; False if the key already exists.

    A concurrent claim of the same key waits for the first transaction and then sees its row.
    """
    claimed = await conn.fetchval(
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


async def find_idempotency_key(conn: asyncpg.Connection, key: str) -> IdempotencyRecord | None:
    row = await conn.fetchrow(
        "SELECT request_hash, order_id FROM idempotency_keys WHERE key = $1", key
    )
    return None if row is None else IdempotencyRecord(row["request_hash"], row["order_id"])


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
