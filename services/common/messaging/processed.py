"""The events a consumer group has handled (`processed_events`): a handler's effect and the
record of its event commit in one transaction, so an event delivered again is skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

from services.common.db import Connection
from services.common.messaging.envelope import Event

# Handles one event in the transaction recording it as processed; what it returns is ignored.
Handler = Callable[[Connection, Event], Awaitable[object]]

# How long a group remembers an event it handled. A redelivery can only be of a message still
# in its topic, so this outlives the brokers' log retention (log.retention.hours in
# mesh/runtime/kafka.py, 7 days) by a day; tests/unit/test_messaging_consumer.py checks it.
PROCESSED_RETENTION_S = 8 * 24 * 3600.0
PRUNE_INTERVAL_S = 3600.0


class ProcessedStore(Protocol):
    async def handle_once(self, group_id: str, event: Event, handler: Handler) -> bool:
        """Run `handler` and record the event in one transaction; False if it was recorded."""
        ...

    async def prune(self, group_id: str, older_than_s: float) -> int:
        """Forget the group's events handled more than `older_than_s` ago; how many."""
        ...


class PgProcessedStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle_once(self, group_id: str, event: Event, handler: Handler) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            # A concurrent transaction recording the same event makes this wait for its outcome.
            first = await conn.fetchval(
                """
                INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2)
                ON CONFLICT DO NOTHING RETURNING true
                """,
                group_id,
                event.id,
            )
            if not first:
                return False
            await handler(conn, event)
            return True

    async def prune(self, group_id: str, older_than_s: float) -> int:
        status = await self._pool.execute(
            """
            DELETE FROM processed_events
            WHERE consumer_group = $1 AND processed_at < now() - make_interval(secs => $2)
            """,
            group_id,
            older_than_s,
        )
        return int(status.split()[-1])
