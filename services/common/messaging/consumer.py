"""Consume CloudEvents from Kafka: idempotent handlers, commit after handling, a DLQ that unblocks.

For each message `ConsumerRunner` parses the envelope, continues the producer's trace (a CONSUMER
span whose parent is the context in the message headers), and calls `handler(conn, event)` in a
Postgres transaction that also records `(group, event id)` in `processed_events`. An event whose
id is already recorded was handled before (a redelivery, or the outbox relay re-publishing after
a crash): the handler is skipped. The partition's next offset is committed only after the
transaction committed, so a crash re-delivers and the record dedupes it.

A handler that raises is retried (`max_attempts`, with backoff); then the original message goes to
`<topic>.dlq` with `shopmesh-error`, `shopmesh-attempts`, `shopmesh-original-topic` and the
partition moves on. A message that is not a valid event goes to the DLQ at once. Errors that mean
"Postgres is unreachable right now" (`is_transient`) are retried without limit instead: an outage
must not dead-letter every message.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common.db import DATABASE_UNAVAILABLE
from services.common.messaging.envelope import (
    Event,
    MalformedEventError,
    current_trace_headers,
    dlq_headers,
    dlq_topic,
    extract_context,
    from_kafka_headers,
    parse,
    to_kafka_headers,
)
from services.common.messaging.producer import bootstrap_servers, create_producer
from services.common.metrics import MessagingMetrics
from services.common.retry import Backoff

log = logging.getLogger(__name__)

Handler = Callable[[asyncpg.Connection, Event], Awaitable[None]]

# Handled offsets are committed at most this often (and at once on a rebalance or a stop).
COMMIT_INTERVAL_S = 1.0
# How long the lag gauge waits for a partition's position (none yet right after assignment).
LAG_POSITION_WAIT_S = 0.1

_MIGRATION_SQL = """\
-- Events a consumer group has handled (services.common.messaging.consumer): written in the
-- same transaction as the handler's effect, so a redelivered event is skipped.
CREATE TABLE processed_events (
    consumer_group text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);
"""


def migration_sql() -> str:
    """The processed_events table, for a service's migrations (see messaging.migrations)."""
    return _MIGRATION_SQL


# -- plain decisions ---------------------------------------------------------------------------

_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_UNAVAILABLE,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_transient(exc: BaseException) -> bool:
    """An error about reaching Postgres (or a lost race), not about this message."""
    return isinstance(exc, _TRANSIENT_ERRORS)


def event_age_s(event: Event, now: float) -> float | None:
    """Seconds from the event's `time` (set when it was written to the outbox) to `now`;
    None without a readable `time`."""
    if event.time is None:
        return None
    try:
        written = datetime.fromisoformat(event.time)
    except ValueError:
        return None
    if written.tzinfo is None:
        return None
    return now - written.timestamp()


def retry_delay(attempt: int, max_attempts: int, backoff: Backoff) -> float | None:
    """After failed attempt number `attempt`: the delay before the next, or None to dead-letter."""
    if attempt >= max_attempts:
        return None
    return backoff.next_delay()


class Outcome(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    ABANDONED = "abandoned"  # stopping mid-retry: not committed, delivered again later


@dataclass
class ConsumerStats:
    consumed: int = 0
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    handler_failures: int = 0
    restarts: int = 0  # consumers closed after an unexpected error and replaced


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord this module reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


# -- seams -------------------------------------------------------------------------------------


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


DeadLetterSend = Callable[[str, bytes | None, bytes | None, dict[str, str]], Awaitable[None]]


# -- one message -------------------------------------------------------------------------------


class MessageProcessor:
    """Handles one record: parse, dedupe, retry, dead-letter. No Kafka consumer involved."""

    def __init__(
        self,
        group_id: str,
        handler: Handler,
        store: ProcessedStore,
        dead_letter: DeadLetterSend,
        *,
        max_attempts: int = 3,
        retry_backoff: Callable[[], Backoff] = lambda: Backoff(initial_s=0.2, max_s=2.0),
        transient_backoff: Callable[[], Backoff] = lambda: Backoff(initial_s=0.5, max_s=5.0),
        is_transient: Callable[[BaseException], bool] = is_transient,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        stopping: Callable[[], bool] = lambda: False,
        stats: ConsumerStats | None = None,
        tracer: trace.Tracer | None = None,
        metrics: MessagingMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.group_id = group_id
        self._handler = handler
        self._store = store
        self._dead_letter = dead_letter
        self.max_attempts = max_attempts
        self._retry_backoff = retry_backoff
        self._transient_backoff = transient_backoff
        self._is_transient = is_transient
        self._sleep = sleep
        self._stopping = stopping
        self.stats = stats or ConsumerStats()
        self._tracer = tracer or trace.get_tracer(__name__)
        self.metrics = metrics or MessagingMetrics()
        self._clock = clock

    async def process(self, record: Record) -> Outcome:
        self.stats.consumed += 1
        headers = from_kafka_headers(record.headers)
        with self._tracer.start_as_current_span(
            f"{record.topic} process",
            context=extract_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self.group_id,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
            },
        ) as span:
            try:
                event = parse(record.value)
            except MalformedEventError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                log.warning(
                    "malformed message; dead-lettering it",
                    extra=_where(record) | {"error": str(exc)},
                )
                return await self._send_to_dlq(record, headers, exc, attempts=0)
            span.set_attribute("messaging.message.id", str(event.id))
            span.set_attribute("cloudevents.event_type", event.type)
            age = event_age_s(event, self._clock())
            if age is not None:
                self.metrics.message_age(record.topic, self.group_id, age)
            return await self._handle(record, headers, event, span)

    async def _handle(
        self, record: Record, headers: dict[str, str], event: Event, span: Any
    ) -> Outcome:
        attempt = 0
        retry_backoff = self._retry_backoff()
        transient_backoff = self._transient_backoff()
        while True:
            if self._stopping():
                return Outcome.ABANDONED
            try:
                first = await self._store.handle_once(self.group_id, event, self._handler)
            except Exception as exc:
                if self._is_transient(exc):
                    delay = transient_backoff.next_delay()
                    log.warning(
                        "database unavailable while handling an event; retrying",
                        extra=_where(record) | _error(exc) | {"retry_in_s": round(delay, 3)},
                    )
                    self.metrics.consumed(record.topic, self.group_id, "retried")
                    await self._sleep(delay)
                    continue
                attempt += 1
                self.stats.handler_failures += 1
                span.record_exception(exc)
                delay = retry_delay(attempt, self.max_attempts, retry_backoff)
                if delay is None:
                    span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {exc}"))
                    log.error(
                        "handler failed; dead-lettering the event",
                        extra=_where(record)
                        | _error(exc)
                        | {"event_id": str(event.id), "attempts": attempt},
                    )
                    return await self._send_to_dlq(record, headers, exc, attempts=attempt)
                log.warning(
                    "handler failed; retrying",
                    extra=_where(record)
                    | _error(exc)
                    | {"event_id": str(event.id), "attempt": attempt, "retry_in_s": delay},
                )
                self.metrics.consumed(record.topic, self.group_id, "retried")
                await self._sleep(delay)
                continue
            if first:
                self.stats.processed += 1
                self.metrics.consumed(record.topic, self.group_id, "ok")
                return Outcome.PROCESSED
            self.stats.duplicates += 1
            self.metrics.consumed(record.topic, self.group_id, "duplicate")
            span.set_attribute("shopmesh.duplicate", True)
            log.info(
                "event already processed; skipped",
                extra=_where(record) | {"event_id": str(event.id)},
            )
            return Outcome.DUPLICATE

    async def _send_to_dlq(
        self, record: Record, headers: dict[str, str], error: BaseException, attempts: int
    ) -> Outcome:
        topic = dlq_topic(record.topic)
        out_headers = dlq_headers(
            headers,
            error=error,
            attempts=attempts,
            original_topic=record.topic,
            trace=current_trace_headers(),
        )
        backoff = self._transient_backoff()
        while True:
            if self._stopping():
                return Outcome.ABANDONED
            try:
                await self._dead_letter(topic, record.value, record.key, out_headers)
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning(
                    "could not publish to the DLQ; retrying",
                    extra=_where(record) | _error(exc) | {"dlq": topic, "retry_in_s": delay},
                )
                await self._sleep(delay)
                continue
            self.stats.dead_lettered += 1
            self.metrics.consumed(record.topic, self.group_id, "dead_lettered")
            self.metrics.dead_lettered(record.topic)
            self.metrics.produced(topic)
            return Outcome.DEAD_LETTERED


def _where(record: Record) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}"}


# -- the Kafka loop ----------------------------------------------------------------------------


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._runner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._runner.metrics.group_member(self._runner.group_id, True)
        log.info(
            "partitions assigned",
            extra={"group": self._runner.group_id, "partitions": sorted(map(str, assigned))},
        )


class ConsumerRunner:
    """Consumes `topics` as `group_id` and hands each event to `handler(conn, event)`.

    `await runner.start()` runs it in the background; `await runner.stop()` finishes the message
    in flight, commits, and leaves the group. `runner.stats` counts consumed, processed,
    duplicates (skipped) and dead-lettered messages.
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        group_id: str,
        handler: Handler,
        pool: asyncpg.Pool | None,
        *,
        store: ProcessedStore | None = None,
        consumer_factory: Callable[[], Any] | None = None,
        producer_factory: Callable[[], Any] | None = None,
        bootstrap: list[str] | None = None,
        client_id: str | None = None,
        max_attempts: int = 3,
        max_batch: int = 100,
        poll_timeout_ms: int = 500,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        metrics: MessagingMetrics | None = None,
        **processor_options: Any,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group_id = group_id
        if store is None:
            if pool is None:
                raise ValueError("ConsumerRunner needs a pool or a store")
            store = PgProcessedStore(pool)
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._consumer_factory = consumer_factory or self._default_consumer
        self._producer_factory = producer_factory or (
            lambda: create_producer(self._servers(), client_id=client_id)
        )
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = ConsumerStats()
        self._store = store
        self._next_prune: float | None = None
        self.processor = MessageProcessor(
            group_id,
            handler,
            store,
            self._dead_letter,
            max_attempts=max_attempts,
            stopping=lambda: self._stopping,
            stats=self.stats,
            metrics=metrics,
            **processor_options,
        )
        self.metrics = self.processor.metrics
        self.metrics.expect(self.topics, group_id)
        self._lag_reported: set[TopicPartition] = set()
        self._consumer: Any = None
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._pending: dict[TopicPartition, int] = {}
        self._last_commit: float | None = None
        self.commit_interval_s = commit_interval_s
        self._generation = 0
        self._revoking = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._startup_backoff = Backoff(initial_s=0.5, max_s=5.0, jitter=0.2)

    def _servers(self) -> list[str]:
        return self._bootstrap or bootstrap_servers()

    def _default_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._servers(),
            group_id=self.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name=f"consumer-{self.group_id}")

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, timeout_s)
            except TimeoutError:
                log.warning(
                    "consumer did not stop in time; cancelled", extra={"group": self.group_id}
                )

    async def run(self) -> None:
        """Consume until stopped. An unexpected error does not end it: the consumer is closed
        (it leaves the group) and a new one joins after a backoff, so the process never stays
        alive outside its group."""
        try:
            while not self._stopping:
                try:
                    await self._start_consumer()
                    await self._consume()
                except Exception:
                    delay = self._startup_backoff.next_delay()
                    log.exception(
                        "consumer failed; rejoining the group",
                        extra={"group": self.group_id, "retry_in_s": round(delay, 2)},
                    )
                    self.stats.restarts += 1
                    await self._shutdown()
                    await asyncio.sleep(delay)
        finally:
            await self._shutdown()

    async def _consume(self) -> None:
        while not self._stopping:
            generation = self._generation
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_batch
                )
            except KafkaError as exc:
                delay = self._startup_backoff.next_delay()
                log.warning(
                    "fetch failed; retrying",
                    extra=_error(exc) | {"group": self.group_id, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                continue
            self._startup_backoff.reset()
            if batch:
                await self.process_batch(batch, generation)
            else:
                async with self._lock:
                    await self._commit_if_due()
            await self.record_lag()
            await self.prune_if_due()

    async def prune_if_due(self) -> None:
        """Forget handled events older than PROCESSED_RETENTION_S, once per PRUNE_INTERVAL_S
        (the first an interval after start); a failure waits for the next interval."""
        now = asyncio.get_running_loop().time()
        if self._next_prune is None:
            self._next_prune = now + PRUNE_INTERVAL_S
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL_S
        try:
            pruned = await self._store.prune(self.group_id, PROCESSED_RETENTION_S)
        except Exception as exc:
            log.warning(
                "processed events prune failed", extra=_error(exc) | {"group": self.group_id}
            )
            return
        if pruned:
            log.info("processed events pruned", extra={"group": self.group_id, "rows": pruned})

    async def process_batch(
        self, batch: dict[TopicPartition, list[Any]], generation: int | None = None
    ) -> None:
        """Handle fetched records in partition order, then commit each partition's next offset.

        Stops early (leaving the rest to be fetched again) when stopping or when a rebalance
        revokes the partitions; a batch fetched before a rebalance is dropped, and the
        partitions this consumer still owns are rewound to its first records (the fetch
        position has moved past them: without the rewind they would be skipped).
        """
        async with self._lock:
            if generation is not None and generation != self._generation:
                self._rewind(batch)
                return
            try:
                for tp, records in batch.items():
                    for record in records:
                        if self._stopping or self._revoking:
                            return
                        outcome = await self.processor.process(record)
                        if outcome is Outcome.ABANDONED:
                            return
                        self._pending[tp] = record.offset + 1
            finally:
                await self._commit_if_due()

    async def record_lag(self) -> None:
        """Set each owned partition's lag: its high watermark (from the last fetch) minus this
        consumer's position, which after a handled batch is the offset it committed."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            # A rebalance may revoke it while an earlier partition's position is awaited, and
            # aiokafka's highwater() asserts that the partition is assigned.
            if tp not in consumer.assignment():
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched from it yet
            try:
                position = await asyncio.wait_for(consumer.position(tp), LAG_POSITION_WAIT_S)
            except (KafkaError, TimeoutError):
                continue  # no position yet (just assigned) or no longer owned
            self.metrics.lag(self.group_id, tp.topic, tp.partition, highwater - position)
            self._lag_reported.add(tp)

    def _forget_lag(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in set(partitions) & self._lag_reported:
            self.metrics.lag(self.group_id, tp.topic, tp.partition, None)
            self._lag_reported.discard(tp)

    def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        if self._consumer is None:
            return
        try:
            owned = self._consumer.assignment()
        except Exception:  # an unsubscribed or closing consumer: nothing to rewind
            return
        for tp, records in batch.items():
            if records and tp in owned:
                self._consumer.seek(tp, records[0].offset)
                log.info(
                    "batch fetched across a rebalance; partition rewound",
                    extra={
                        "group": self.group_id,
                        "partition": str(tp),
                        "offset": records[0].offset,
                    },
                )

    async def _commit_if_due(self) -> None:
        """Commit what was handled, at most once per COMMIT_INTERVAL_S: an offset commit is a
        write to __consumer_offsets that every broker replicates, and one per handled batch
        was most of the brokers' work for an order. Handlers are idempotent, so what a crash
        leaves uncommitted (at most that interval) is only delivered again and skipped."""
        now = asyncio.get_running_loop().time()
        if self._last_commit is not None and now - self._last_commit < self.commit_interval_s:
            return
        self._last_commit = now
        await self._commit()

    async def _commit(self) -> None:
        if not self._pending or self._consumer is None:
            return
        offsets, self._pending = dict(self._pending), {}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on; the new owner re-reads from the last commit and dedupes.
            log.warning("offset commit rejected after a rebalance", extra=_error(exc))
        except KafkaError as exc:
            log.warning("offset commit failed; will retry with the next", extra=_error(exc))
            for tp, offset in offsets.items():
                self._pending.setdefault(tp, offset)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.metrics.group_member(self.group_id, False)
        self._generation += 1
        self._revoking = True
        try:
            async with self._lock:  # the message in flight finishes; the batch loop commits
                await self._commit()
                self._pending.clear()
        finally:
            self._revoking = False
        self._forget_lag(revoked)
        log.info(
            "partitions revoked",
            extra={"group": self.group_id, "partitions": sorted(map(str, revoked))},
        )

    async def _start_consumer(self) -> None:
        while not self._stopping:
            consumer = self._consumer_factory()
            consumer.subscribe(self.topics, listener=_Rebalance(self))
            try:
                await consumer.start()
            except Exception as exc:
                delay = self._startup_backoff.next_delay()
                log.warning(
                    "Kafka not reachable for the consumer; retrying",
                    extra=_error(exc) | {"group": self.group_id, "retry_in_s": round(delay, 2)},
                )
                await _quietly(consumer.stop())
                await asyncio.sleep(delay)
                continue
            self._consumer = consumer
            log.info("consumer started", extra={"group": self.group_id, "topics": self.topics})
            return

    async def _dead_letter(
        self, topic: str, value: bytes | None, key: bytes | None, headers: dict[str, str]
    ) -> None:
        if self._producer is None:
            producer = self._producer_factory()
            try:
                await producer.start()
            except BaseException:
                await _quietly(producer.stop())
                raise
            self._producer = producer
        try:
            await self._producer.send_and_wait(
                topic, value=value, key=key, headers=to_kafka_headers(headers)
            )
        except Exception:
            producer, self._producer = self._producer, None
            await _quietly(producer.stop())
            raise

    async def _shutdown(self) -> None:
        self.metrics.group_member(self.group_id, False)
        self._forget_lag(set(self._lag_reported))
        if self._consumer is not None:
            async with self._lock:
                await self._commit()
            consumer, self._consumer = self._consumer, None
            await _quietly(consumer.stop())
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly(producer.stop())


async def _quietly(awaitable: Awaitable[Any], timeout_s: float = 10.0) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout_s)
    except Exception as exc:
        log.debug("ignored while closing", extra=_error(exc))
