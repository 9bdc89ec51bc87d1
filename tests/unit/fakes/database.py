"""Tables in memory with transactions: the base of every fake unit of work.

A transaction works on a copy of the committed tables: when its block ends the copy becomes the
committed tables, when the block raises the copy is dropped. Transactions run one at a time (a
second one waits for the first to end, as a second writer of the same rows waits in Postgres),
so they are serializable. Outside a transaction each repository call is a transaction of its
own, as a statement on the pool commits on its own. Every repository call yields to the event
loop first (the round trip to the database), so concurrent use cases interleave between
statements as they do against Postgres. The tables hold immutable records, so copying their
containers is enough.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from services.common.messaging.envelope import message_key, validate

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    event: Mapping[str, Any]
    # Written with hold_s and neither released nor published yet.
    held: bool = False
    published: bool = False

    @property
    def type(self) -> str:
        return self.event["type"]

    @property
    def data(self) -> Mapping[str, Any]:
        return self.event["data"]

    def held_for(self, topic: str, key: str) -> bool:
        return self.held and not self.published and (self.topic, self.key) == (topic, key)


class FakeOutbox:
    """The outbox of one unit of work; like the real one it refuses a malformed CloudEvent or
    key, and withdraws or releases only held-back messages not published yet."""

    def __init__(self, messages: list[OutboxMessage]) -> None:
        self._messages = messages

    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, hold_s: float | None = None
    ) -> None:
        await round_trip()
        validate(event)
        message_key(key)
        self._messages.append(OutboxMessage(topic, key, event, held=hold_s is not None))

    async def withdraw(self, topic: str, key: str) -> None:
        await round_trip()
        self._messages[:] = [m for m in self._messages if not m.held_for(topic, key)]

    async def release(self, topic: str, key: str) -> None:
        await round_trip()
        self._messages[:] = [
            replace(m, held=False) if m.held_for(topic, key) else m for m in self._messages
        ]


async def round_trip() -> None:
    await asyncio.sleep(0)


class Transactions(Generic[T, U]):
    """Transactions on `tables`, each handing its block `unit_of_work(copy of the tables)`;
    `after_commit(tables)` runs once the copy is committed."""

    def __init__(
        self,
        tables: T,
        unit_of_work: Callable[[T], U],
        *,
        after_commit: Callable[[T], None] | None = None,
    ) -> None:
        self.tables = tables
        self.committed = 0
        self.rolled_back = 0
        self._unit_of_work = unit_of_work
        self._after_commit = after_commit
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[U]:
        async with self._lock:
            working = copy.copy(self.tables)
            for name, rows in vars(working).items():
                setattr(working, name, copy.copy(rows))
            try:
                yield self._unit_of_work(working)
            except BaseException:
                self.rolled_back += 1
                raise
            vars(self.tables).update(vars(working))
            self.committed += 1
        if self._after_commit is not None:
            self._after_commit(self.tables)


class Autocommit(Generic[U]):
    """The repository `pick(unit of work)` outside any transaction: each call on its own."""

    def __init__(self, transactions: Transactions[Any, U], pick: Callable[[U], object]) -> None:
        self._transactions = transactions
        self._pick = pick

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._transactions.transaction() as uow:
                return await getattr(self._pick(uow), name)(*args, **kwargs)

        return call
