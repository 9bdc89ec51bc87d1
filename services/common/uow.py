"""The unit-of-work seam the services share: the outbox a unit of work writes its events to,
and the asyncpg way of running one.

A service layer opens a unit of work with `async with database.transaction() as uow:`; what it
writes there (its rows, its outbox events) commits when the block ends and rolls back when the
block raises. Reads that need no transaction go to the repositories outside it, on the pool,
each statement on its own (no BEGIN/COMMIT round trips for a plain read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from services.common.db import Connection
from services.common.messaging import outbox
from services.common.messaging.envelope import Event
from services.common.messaging.processed import Handler

U = TypeVar("U")


class Outbox(Protocol):
    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, hold_s: float | None = None
    ) -> None:
        """Queue the CloudEvent `event` for `topic`, keyed by its aggregate id `key`; it is
        published only if the unit of work commits, with `hold_s` no sooner than that many
        seconds later unless released first (services.common.messaging.outbox, "Held back")."""
        ...

    async def withdraw(self, topic: str, key: str) -> None:
        """The held-back events of `key` on `topic` not published yet never will be."""
        ...

    async def release(self, topic: str, key: str) -> None:
        """The held-back events of `key` on `topic` not published yet are published now."""
        ...


class PostgresOutbox:
    """The outbox table, written on the connection of the unit of work's transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, hold_s: float | None = None
    ) -> None:
        await outbox.add(self._conn, topic, key, event, hold_s=hold_s)

    async def withdraw(self, topic: str, key: str) -> None:
        await outbox.withdraw(self._conn, topic, key)

    async def release(self, topic: str, key: str) -> None:
        await outbox.release(self._conn, topic, key)


class PostgresTransactions(Generic[U]):
    """Units of work on asyncpg: `unit_of_work(conn)` on a pooled connection in a transaction."""

    def __init__(self, pool: asyncpg.Pool, unit_of_work: Callable[[Connection], U]) -> None:
        self._pool = pool
        self._unit_of_work = unit_of_work

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[U]:
        """Committed when the block ends, rolled back when it raises."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield self._unit_of_work(conn)


def in_consumer_transaction(
    unit_of_work: Callable[[Connection], U],
    handle: Callable[[U, Event], Awaitable[object]],
) -> Handler:
    """A consumer handler that runs `handle` on the unit of work of the consumer's own
    transaction (the one recording the event in processed_events): the effect commits or
    rolls back with that record, so it happens once."""

    async def handler(conn: Connection, event: Event) -> None:
        await handle(unit_of_work(conn), event)

    return handler
