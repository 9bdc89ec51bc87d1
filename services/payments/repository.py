"""SQL for payments, and the change notifications (Postgres NOTIFY) that go with it.

Thin: transactions belong to the service layer, which opens them through
`PostgresPaymentsDatabase.transaction()`. `notify_changed` runs in the transaction that changed
the row, so the notification is delivered exactly when the change commits.
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import asyncpg

from services.common.db import Connection
from services.common.uow import PostgresOutbox, PostgresTransactions
from services.payments.domain import Outcome, Payment, PaymentStatus

CHANNEL = "payment_changed"

_COLUMNS = "id, order_id, user_id, amount, currency, status, decline_reason, created_at, updated_at"

Executor = Connection | asyncpg.Pool


class PostgresPayments:
    """Payments and blocked users on `db`: the pool (each statement on its own) or the
    connection of a transaction."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def insert_pending(self, payment: Payment, *, lease_s: float) -> Payment | None:
        """Insert the PENDING `payment`, claimed for `lease_s`; None if the order has a payment.

        A concurrent insert for the same order waits for the first transaction, then finds the
        conflict: exactly one row per order, whoever commits first.
        """
        row = await self._db.fetchrow(
            f"""
            INSERT INTO payments ({_COLUMNS}, processing_until)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
            ON CONFLICT (order_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            payment.id,
            payment.order_id,
            payment.user_id,
            payment.amount,
            payment.currency,
            payment.status.value,
            payment.decline_reason,
            payment.created_at,
            payment.updated_at,
            lease_s,
        )
        return None if row is None else _payment(row)

    async def insert_cancelled(self, payment: Payment) -> Payment | None:
        """Insert the CANCELLED `payment`; None if the order has a payment (as insert_pending:
        one row per order, whoever commits first)."""
        row = await self._db.fetchrow(
            f"""
            INSERT INTO payments ({_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, 'CANCELLED', NULL, $6, $7)
            ON CONFLICT (order_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            payment.id,
            payment.order_id,
            payment.user_id,
            payment.amount,
            payment.currency,
            payment.created_at,
            payment.updated_at,
        )
        return None if row is None else _payment(row)

    async def claim_stalled(self, payment_id: uuid.UUID, *, lease_s: float) -> Payment | None:
        """Claim a PENDING payment whose processing lease has run out; None if it has not."""
        row = await self._db.fetchrow(
            f"""
            UPDATE payments SET processing_until = now() + make_interval(secs => $2)
            WHERE id = $1 AND status = 'PENDING' AND processing_until < now()
            RETURNING {_COLUMNS}
            """,
            payment_id,
            lease_s,
        )
        return None if row is None else _payment(row)

    async def finish(
        self, payment_id: uuid.UUID, outcome: Outcome, *, charged_by: str | None = None
    ) -> Payment | None:
        """Record the provider's outcome on a PENDING payment; None if it is already final."""
        row = await self._db.fetchrow(
            f"""
            UPDATE payments
            SET status = $2, decline_reason = $3, processing_until = NULL, updated_at = now(),
                charged_by = $4
            WHERE id = $1 AND status = 'PENDING'
            RETURNING {_COLUMNS}
            """,
            payment_id,
            outcome.status.value,
            outcome.decline_reason,
            charged_by,
        )
        return None if row is None else _payment(row)

    async def mark_refunded(self, payment_id: uuid.UUID) -> Payment | None:
        """SUCCEEDED becomes REFUNDED; None if the payment is not SUCCEEDED (refunded already)."""
        row = await self._db.fetchrow(
            f"""
            UPDATE payments SET status = 'REFUNDED', updated_at = now()
            WHERE id = $1 AND status = 'SUCCEEDED'
            RETURNING {_COLUMNS}
            """,
            payment_id,
        )
        return None if row is None else _payment(row)

    async def is_blocked(self, user_id: str) -> bool:
        return bool(
            await self._db.fetchval("SELECT true FROM blocked_users WHERE user_id = $1", user_id)
        )

    async def block_user(self, user_id: str) -> None:
        await self._db.execute(
            "INSERT INTO blocked_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
        )

    async def get(self, payment_id: uuid.UUID) -> Payment | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM payments WHERE id = $1", payment_id)
        return None if row is None else _payment(row)

    async def get_for_order(self, order_id: str) -> Payment | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM payments WHERE order_id = $1", order_id
        )
        return None if row is None else _payment(row)

    async def list_for_user(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Payment]:
        """Up to `limit` of the user's payments ordered by (created_at, id), strictly after
        `after`."""
        if after is None:
            rows = await self._db.fetch(
                f"""
                SELECT {_COLUMNS} FROM payments WHERE user_id = $1
                ORDER BY created_at, id LIMIT $2
                """,
                user_id,
                limit,
            )
        else:
            rows = await self._db.fetch(
                f"""
                SELECT {_COLUMNS} FROM payments
                WHERE user_id = $1 AND (created_at, id) > ($2, $3)
                ORDER BY created_at, id LIMIT $4
                """,
                user_id,
                after[0],
                after[1],
                limit,
            )
        return [_payment(row) for row in rows]


class PostgresPaymentsUnitOfWork:
    """Payments, the outbox and change notifications on the connection of one transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.payments = PostgresPayments(conn)
        self.outbox = PostgresOutbox(conn)

    async def notify_changed(self, payment: Payment) -> None:
        """NOTIFY listeners of `payment`'s new state when the transaction commits."""
        await self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, encode_notification(payment))


class PostgresPaymentsDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.payments = PostgresPayments(pool)
        self._transactions = PostgresTransactions(pool, PostgresPaymentsUnitOfWork)

    def transaction(self) -> AbstractAsyncContextManager[PostgresPaymentsUnitOfWork]:
        return self._transactions.transaction()


def encode_notification(payment: Payment) -> str:
    return json.dumps(
        {
            "id": str(payment.id),
            "order_id": payment.order_id,
            "user_id": payment.user_id,
            "amount": payment.amount,
            "currency": payment.currency,
            "status": payment.status.value,
            "decline_reason": payment.decline_reason,
            "created_at": payment.created_at.isoformat(),
            "updated_at": payment.updated_at.isoformat(),
        },
        separators=(",", ":"),
    )


def decode_notification(payload: str) -> Payment:
    data = json.loads(payload)
    return Payment(
        id=uuid.UUID(data["id"]),
        order_id=data["order_id"],
        user_id=data["user_id"],
        amount=data["amount"],
        currency=data["currency"],
        status=PaymentStatus(data["status"]),
        decline_reason=data["decline_reason"],
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(
        id=row["id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=PaymentStatus(row["status"]),
        decline_reason=row["decline_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
