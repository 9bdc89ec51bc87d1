"""Fakes shared by the messaging tests (no network): a Kafka producer and seam stores."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from services.common.messaging.outbox import Backlog, OutboxRow


@dataclass
class Record:
    """What the consumer runner reads from aiokafka: a ConsumerRecord's fields it uses."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)


@dataclass
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: dict[str, str]


class FakeProducer:
    """Records what it is sent; `fail_sends` makes the next N sends fail (not acked).

    Like Kafka's idempotent producer, a key (partition) whose send failed delivers nothing
    after it from the same producer: order within a partition holds.
    """

    def __init__(self, log: list[Sent], *, fail_start: bool = False, fail_sends: int = 0):
        self.log = log
        self.fail_start = fail_start
        self.fail_sends = fail_sends
        self.started = False
        self.stopped = False
        self.failed_keys: set[bytes | None] = set()

    async def start(self):
        if self.fail_start:
            raise ConnectionError("no broker")
        self.started = True

    async def stop(self):
        self.stopped = True

    async def send(self, topic, value=None, key=None, headers=None):
        future = asyncio.get_running_loop().create_future()
        if self.fail_sends or key in self.failed_keys:
            self.fail_sends = max(self.fail_sends - 1, 0)
            self.failed_keys.add(key)
            future.set_exception(TimeoutError("batch expired"))
        else:
            self.log.append(Sent(topic, value, key, {k: v.decode() for k, v in headers or []}))
            future.set_result(None)
        return future

    async def send_and_wait(self, topic, value=None, key=None, headers=None):
        return await (await self.send(topic, value=value, key=key, headers=headers))


class ProducerFactory:
    """Hands out FakeProducers; `plan` says how each successive one misbehaves."""

    def __init__(self, plan: list[dict] | None = None):
        self.sent: list[Sent] = []
        self.plan = list(plan or [])
        self.made: list[FakeProducer] = []

    def __call__(self) -> FakeProducer:
        options = self.plan.pop(0) if self.plan else {}
        producer = FakeProducer(self.sent, **options)
        self.made.append(producer)
        return producer


@dataclass
class FakeClaim:
    store: FakeOutboxStore
    rows: list[OutboxRow]

    async def mark_published(self, ids):
        self.store.mark_calls.append(list(ids))
        self.store.published.update(ids)


@dataclass
class FakeOutboxStore:
    rows: list[OutboxRow] = field(default_factory=list)
    published: set[int] = field(default_factory=set)
    mark_calls: list[list[int]] = field(default_factory=list)
    locked_by_other: bool = False

    @asynccontextmanager
    async def claim(self, limit):
        if self.locked_by_other:
            yield None
            return
        unpublished = [
            r for r in sorted(self.rows, key=lambda r: r.id) if r.id not in self.published
        ]
        yield FakeClaim(self, unpublished[:limit])

    async def backlog(self):
        count = len([r for r in self.rows if r.id not in self.published])
        return Backlog(count=count, oldest_age_s=12.5 if count else None)

    async def prune(self, older_than_s):
        return 0
