"""The transactional outbox: events are written with the state change, a relay publishes them.

A service calls `add(conn, topic, key, event)` inside the transaction that changes its state, so
the event exists if and only if the change committed. `OutboxRelay` publishes unpublished rows
in id order, awaits the broker's acks, then marks the batch published.

Delivery is at least once. A crash (or a Kafka error) after the broker acked a batch but before
it was marked published re-publishes that batch on restart; consumers dedupe by event id
(`processed_events`), so a duplicate has no effect. Nothing is lost: a row is marked only after
every message of its batch was acked by all in-sync replicas.

Order: one relay publishes at a time per database (a transaction-level advisory lock taken with
pg_try_advisory_xact_lock: an instance that does not get it waits for the next poll; the batch
rows are also locked FOR UPDATE). Not SKIP LOCKED: two instances publishing disjoint batches at
once could reorder the events of one key across the batches. Batches are read and sent in id
order, each batch is acked before the next is read, and the idempotent producer keeps
per-partition order across its retries. So events of one key (one partition) arrive in the
order of their outbox ids. Rows of one aggregate get ids in commit order when the service
updates the aggregate row (taking its row lock) before calling `add`, the natural order in a
use case. One narrow exception, in aiokafka: a batch that expires in the producer while its
partition has no leader fails alone, and a later batch of that partition can still go out once
a leader is elected; the re-sent earlier event then arrives after it.

Held back: `add(..., hold_s=S)` writes an event the relay leaves alone for S seconds. Until then
the use case that wrote it may `withdraw` it (it is never published) or `release` it (it is
published at once). It exists so that a safety net costs nothing when it is not needed: orders'
payment task is published only if its synchronous payment did not settle the order first.
A held-back event goes out after events written later, so only an event whose key has no other
event on its topic may be held back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common.db import Connection
from services.common.messaging.envelope import (
    current_trace_headers,
    extract_context,
    message_key,
    to_kafka_headers,
    validate,
)
from services.common.metrics import MessagingMetrics
from services.common.pg_listen import PgListener
from services.common.retry import Backoff

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "outbox"
# Held for the duration of one relay batch: one publisher per database at a time.
RELAY_LOCK_KEY = 0x5348_4F50_4F42_5831  # "SHOPOBX1"


async def add(
    conn: Connection,
    topic: str,
    key: str | uuid.UUID,
    event: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    hold_s: float | None = None,
) -> None:
    """Queue `event` for `topic`, keyed by the aggregate id `key`, in `conn`'s transaction.

    The current trace context is stored with it (explicit `headers` win), so the consumer's
    span continues the trace of the request that produced the event. The relay is woken when
    the transaction commits; with `hold_s` the event waits that long first (see the module's
    docstring).
    """
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.add must run inside the transaction of the state change")
    parsed = validate(event)
    message_key(key)
    stored_headers = {**current_trace_headers(), **(headers or {})}
    await conn.execute(
        """
        WITH queued AS (
            INSERT INTO outbox (event_id, topic, key, payload, headers, not_before)
            VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb,
                    now() + make_interval(secs => $7::float8))
        )
        SELECT pg_notify($6, '') WHERE $7::float8 IS NULL
        """,
        parsed.id,
        topic,
        str(key),
        json.dumps(event, separators=(",", ":"), ensure_ascii=False),
        json.dumps(stored_headers),
        NOTIFY_CHANNEL,
        hold_s,
    )


async def withdraw(conn: Connection, topic: str, key: str | uuid.UUID) -> int:
    """Drop the held-back events of `key` on `topic` that are not published yet, in `conn`'s
    transaction; how many."""
    status = await conn.execute(
        """
        DELETE FROM outbox
        WHERE topic = $1 AND key = $2 AND published_at IS NULL AND not_before IS NOT NULL
        """,
        topic,
        str(key),
    )
    return int(status.split()[-1])


async def release(conn: Connection, topic: str, key: str | uuid.UUID) -> int:
    """Make the held-back events of `key` on `topic` due now, in `conn`'s transaction (the relay
    is woken when it commits); how many."""
    released = await conn.fetchval(
        """
        WITH due AS (
            UPDATE outbox SET not_before = NULL
            WHERE topic = $1 AND key = $2 AND published_at IS NULL AND not_before IS NOT NULL
            RETURNING 1
        )
        SELECT count(*) FROM due
        """,
        topic,
        str(key),
    )
    if released:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return int(released)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: uuid.UUID
    topic: str
    key: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest_age_s: float | None


class Claim(Protocol):
    rows: list[OutboxRow]

    async def mark_published(self, ids: Sequence[int]) -> None: ...


class OutboxStore(Protocol):
    def claim(self, limit: int) -> AbstractAsyncContextManager[Claim | None]:
        """The oldest `limit` unpublished rows, locked until the context exits.

        None when another relay holds the batch lock. Leaving with an exception rolls back.
        """
        ...

    async def backlog(self) -> Backlog: ...

    async def prune(self, older_than_s: float) -> int: ...


class PgOutboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Claim | None]:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY):
                yield None
                return
            records = await conn.fetch(
                """
                SELECT id, event_id, topic, key, payload::text AS payload, headers::text AS headers
                FROM outbox
                WHERE published_at IS NULL AND (not_before IS NULL OR not_before <= now())
                ORDER BY id LIMIT $1
                FOR UPDATE
                """,
                limit,
            )
            rows = [
                OutboxRow(
                    id=r["id"],
                    event_id=r["event_id"],
                    topic=r["topic"],
                    key=r["key"],
                    payload=r["payload"].encode(),
                    headers=json.loads(r["headers"]),
                )
                for r in records
            ]
            yield _PgClaim(conn, rows)

    async def backlog(self) -> Backlog:
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS count,
                   EXTRACT(EPOCH FROM now() - min(coalesce(not_before, created_at)))::float8
                       AS oldest_age_s
            FROM outbox
            WHERE published_at IS NULL AND (not_before IS NULL OR not_before <= now())
            """
        )
        assert row is not None  # an aggregate without GROUP BY answers one row
        return Backlog(count=row["count"], oldest_age_s=row["oldest_age_s"])

    async def prune(self, older_than_s: float) -> int:
        status = await self._pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
            older_than_s,
        )
        return int(status.split()[-1])


@dataclass
class _PgClaim:
    conn: Connection
    rows: list[OutboxRow]

    async def mark_published(self, ids: Sequence[int]) -> None:
        await self.conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
        )


class PublishError(Exception):
    """Kafka did not ack a batch; nothing of it was marked published."""


ProducerFactory = Callable[[], Any]  # returns a not yet started AIOKafkaProducer (or a fake)


class OutboxRelay:
    """Publishes outbox rows to Kafka until stopped; see the module docstring for guarantees.

    `await relay.start()` runs it as a background task; `await relay.stop()` finishes the batch
    in flight and closes the producer. Kafka or Postgres errors back off exponentially (capped)
    and retry forever: rows stay unpublished until acked.

    The idempotent producer retries a batch it has sent until the broker takes it, so by
    default the relay waits for the acks without a deadline (during an outage it holds its
    batch transaction open and completes it, in order, when Kafka is back). `publish_timeout_s`
    bounds that wait instead; on expiry the producer is discarded and the batch re-sent.
    """

    def __init__(
        self,
        pool: asyncpg.Pool | None,
        producer_factory: ProducerFactory,
        *,
        store: OutboxStore | None = None,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        publish_timeout_s: float | None = None,
        backoff: Backoff | None = None,
        listen: bool = True,
        retention_s: float | None = 7 * 24 * 3600.0,
        prune_interval_s: float = 3600.0,
        tracer: trace.Tracer | None = None,
        metrics: MessagingMetrics | None = None,
        backlog_interval_s: float = 1.0,
    ) -> None:
        if store is None:
            if pool is None:
                raise ValueError("OutboxRelay needs a pool or a store")
            store = PgOutboxStore(pool)
        self._pool = pool
        self._store = store
        self._producer_factory = producer_factory
        self._producer: Any = None
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.publish_timeout_s = publish_timeout_s
        self.backoff = backoff or Backoff(initial_s=0.1, max_s=5.0, jitter=0.2)
        self._listener = (
            PgListener(pool, NOTIFY_CHANNEL, lambda _payload: self._wake.set())
            if listen and pool is not None
            else None
        )
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._tracer = tracer or trace.get_tracer(__name__)
        self.metrics = metrics or MessagingMetrics()
        self.backlog_interval_s = backlog_interval_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._backlog_task: asyncio.Task[None] | None = None
        # For metrics.
        self.published_total = 0
        self.batches_total = 0
        self.failures_total = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="outbox-relay")
        if self._backlog_task is None and self.metrics.service is not None:
            self._backlog_task = asyncio.create_task(self.watch_backlog(), name="outbox-backlog")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the batch in flight (or cancel it after `timeout_s`: it is re-sent later)."""
        self._stopping = True
        self._wake.set()
        if self._backlog_task is not None:
            backlog_task, self._backlog_task = self._backlog_task, None
            backlog_task.cancel()
            await asyncio.gather(backlog_task, return_exceptions=True)
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, timeout_s)
            except TimeoutError:
                log.warning("outbox relay did not stop in time; cancelled its batch")
        await self._close()

    async def run(self) -> None:
        """The relay loop: publish while there are rows, then wait for a NOTIFY or the poll."""
        last_prune = float("-inf")
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    published = await self.run_once()
                except Exception as exc:
                    self.failures_total += 1
                    delay = self.backoff.next_delay()
                    log.warning(
                        "outbox relay failed; retrying",
                        extra={
                            "error": f"{type(exc).__name__}: {exc}",
                            "failures": self.backoff.failures,
                            "retry_in_s": round(delay, 3),
                        },
                    )
                    if isinstance(exc, PublishError):
                        await self._drop_producer()
                    await self._sleep(delay)
                    continue
                self.backoff.reset()
                if (
                    self._retention_s is not None
                    and loop.time() - last_prune > self._prune_interval_s
                ):
                    last_prune = loop.time()
                    await self._prune()
                if published is not None and published >= self.batch_size:
                    continue
                await self._wait_for_rows()
        finally:
            await self._close()

    # -- one batch ---------------------------------------------------------------------------

    async def run_once(self) -> int | None:
        """Publish one batch; the number of rows published, or None if another relay holds it."""
        async with self._store.claim(self.batch_size) as claim:
            if claim is None:
                return None
            if not claim.rows:
                return 0
            await self._publish(claim.rows)
            await claim.mark_published([row.id for row in claim.rows])
        for topic in sorted({row.topic for row in claim.rows}):
            self.metrics.produced(topic, sum(1 for row in claim.rows if row.topic == topic))
        self.published_total += len(claim.rows)
        self.batches_total += 1
        return len(claim.rows)

    async def _publish(self, rows: Sequence[OutboxRow]) -> None:
        spans = []
        try:
            producer = await self._ensure_producer()
            futures = []
            for row in rows:
                span = self._tracer.start_span(
                    f"{row.topic} publish",
                    context=extract_context(row.headers),
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "publish",
                        "messaging.destination.name": row.topic,
                        "messaging.message.id": str(row.event_id),
                        "messaging.kafka.message.key": row.key,
                    },
                )
                spans.append(span)
                headers = {**row.headers, **current_trace_headers(trace.set_span_in_context(span))}
                futures.append(
                    await producer.send(
                        row.topic,
                        value=row.payload,
                        key=message_key(row.key),
                        headers=to_kafka_headers(headers),
                    )
                )
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self.publish_timeout_s
            )  # None: no deadline
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise PublishError(f"{len(errors)} of {len(rows)} not acked: {errors[0]!r}")
        except PublishError as exc:
            _fail_spans(spans, exc)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            _fail_spans(spans, None)
            raise
        except Exception as exc:
            _fail_spans(spans, exc)
            raise PublishError(f"{type(exc).__name__}: {exc}") from exc
        for span in spans:
            span.end()

    # -- metrics -----------------------------------------------------------------------------

    async def backlog(self) -> int:
        """Unpublished rows."""
        return (await self._store.backlog()).count

    async def oldest_unpublished_age_s(self) -> float | None:
        """Seconds since the oldest unpublished row was written; None when all are published."""
        return (await self._store.backlog()).oldest_age_s

    async def watch_backlog(self) -> None:
        """Set the backlog gauges every `backlog_interval_s`, apart from the relay loop: a
        batch waiting for Kafka's acks must not freeze them (that is when they matter)."""
        while True:
            try:
                backlog = await self._store.backlog()
            except Exception as exc:  # the database is unreachable: keep the last values
                log.debug("outbox backlog not readable", extra={"error": repr(exc)})
            else:
                self.metrics.outbox(backlog.count, backlog.oldest_age_s)
            await asyncio.sleep(self.backlog_interval_s)

    # -- helpers -----------------------------------------------------------------------------

    async def _ensure_producer(self) -> Any:
        if self._producer is None:
            producer = self._producer_factory()
            try:
                await producer.start()
            except BaseException:
                with suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5.0)
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        """Close the producer after a failure; the next batch starts a fresh one.

        A producer that cannot flush within 5 s has its sender task cancelled: it must not
        deliver old batches behind the back of its successor.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), 5.0)
        except Exception as exc:
            log.warning("producer did not close cleanly", extra={"error": repr(exc)})
            sender_task = getattr(getattr(producer, "_sender", None), "sender_task", None)
            if sender_task is not None:
                sender_task.cancel()
            client = getattr(producer, "client", None)
            if client is not None:
                with suppress(Exception):
                    await asyncio.wait_for(client.close(), 5.0)

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, waking early only to stop (a NOTIFY must not shortcut a backoff)."""
        deadline = asyncio.get_running_loop().time() + delay_s
        while not self._stopping:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _wait_for_rows(self) -> None:
        if self._listener is not None:
            await self._listener.ensure()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _prune(self) -> None:
        assert self._retention_s is not None
        try:
            pruned = await self._store.prune(self._retention_s)
        except Exception as exc:
            log.warning("outbox prune failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        if pruned:
            log.info("outbox pruned", extra={"rows": pruned})

    async def _close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        await self._drop_producer()


def _fail_spans(spans: list[Any], exc: BaseException | None) -> None:
    for span in spans:
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()
