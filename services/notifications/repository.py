"""SQL for notifications (asyncpg)."""

from __future__ import annotations

import uuid

import asyncpg

from services.notifications.domain import Notification, UnknownCursorError
from services.notifications.live import ANNOUNCE_CHANNEL

_COLUMNS = "id, user_id, type, subject, data, created_at"


class PostgresRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, notification: Notification) -> bool:
        """Insert `notification` and announce it on ANNOUNCE_CHANNEL (delivered when the insert
        commits); False, and no announcement, if its id is already stored (a concurrent insert
        of the same id waits for the first one and then finds it)."""
        announced = await self._pool.fetch(
            f"""
            WITH inserted AS (
                INSERT INTO notifications ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (id) DO NOTHING
                RETURNING id, user_id
            )
            SELECT pg_notify($7, json_build_object('user_id', user_id, 'id', id)::text)
            FROM inserted
            """,
            notification.id,
            notification.user_id,
            notification.type,
            notification.subject,
            notification.data,
            notification.created_at,
            ANNOUNCE_CHANNEL,
        )
        return bool(announced)

    async def get(self, notification_id: uuid.UUID) -> Notification | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM notifications WHERE id = $1", notification_id
        )
        return None if row is None else _notification(row)

    async def list_for_user(
        self, user_id: str, *, limit: int, after: uuid.UUID | None
    ) -> list[Notification]:
        async with self._pool.acquire() as conn:
            if after is None:
                rows = await conn.fetch(
                    f"""
                    SELECT {_COLUMNS} FROM notifications WHERE user_id = $1
                    ORDER BY created_at DESC, id DESC LIMIT $2
                    """,
                    user_id,
                    limit,
                )
            else:
                cursor = await conn.fetchrow(
                    "SELECT created_at, id FROM notifications WHERE id = $1 AND user_id = $2",
                    after,
                    user_id,
                )
                if cursor is None:
                    raise UnknownCursorError(after)
                rows = await conn.fetch(
                    f"""
                    SELECT {_COLUMNS} FROM notifications
                    WHERE user_id = $1 AND (created_at, id) < ($2, $3)
                    ORDER BY created_at DESC, id DESC LIMIT $4
                    """,
                    user_id,
                    cursor["created_at"],
                    cursor["id"],
                    limit,
                )
        return [_notification(row) for row in rows]


def _notification(row: asyncpg.Record) -> Notification:
    return Notification(
        id=row["id"],
        type=row["type"],
        subject=row["subject"],
        user_id=row["user_id"],
        data=row["data"],
        created_at=row["created_at"],
    )
