"""Consume CloudEvents from Kafka: one consumer group's `ConsumerRunner`, committing after handling.

The runner fetches batches and hands each record, in partition order, to its MessageProcessor
(services.common.messaging.processor: idempotent handling, retries, the DLQ). The partition's
next offset is committed only after the record's transaction committed, so a crash re-delivers
and `processed_events` dedupes it. An unexpected error closes the consumer (it leaves the
group) and a new one joins after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace

from services.common.logging import error_fields
from services.common.messaging.envelope import to_kafka_headers
from services.common.messaging.processed import (
    PROCESSED_RETENTION_S,
    PRUNE_INTERVAL_S,
    Handler,
    PgProcessedStore,
    ProcessedStore,
)
from services.common.messaging.processor import (
    DEFAULT_RETRIES,
    ConsumerStats,
    MessageProcessor,
    Outcome,
    ProcessorDependencies,
    RetryPolicy,
)
from services.common.messaging.producer import bootstrap_servers, create_producer
from services.common.messaging.security import sasl_options
from services.common.metrics import MessagingMetrics
from services.common.retry import Backoff

log = logging.getLogger(__name__)

# Handled offsets are committed at most this often (and at once on a rebalance or a stop).
COMMIT_INTERVAL_S = 1.0
# How long the lag gauge waits for a partition's position (none yet right after assignment).
LAG_POSITION_WAIT_S = 0.1
# How long a broker holds a fetch that finds nothing new. A fetch returns as soon as a record
# arrives, and each broker is fetched from on its own, so this costs no latency; it sets what an
# idle consumer costs: at Kafka's 500 ms the mesh's idle consumers kept every broker's request
# threads busiest of all its idle work.
FETCH_MAX_WAIT_MS = 5_000


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
        security: Mapping[str, Any] | None = None,
        client_id: str | None = None,
        retries: RetryPolicy = DEFAULT_RETRIES,
        max_batch: int = 100,
        poll_timeout_ms: int = 500,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        metrics: MessagingMetrics | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group_id = group_id
        if store is None:
            if pool is None:
                raise ValueError("ConsumerRunner needs a pool or a store")
            store = PgProcessedStore(pool)
        self._bootstrap = bootstrap
        self._security = security
        self._client_id = client_id
        self._consumer_factory = consumer_factory or self._default_consumer
        self._producer_factory = producer_factory or (
            lambda: create_producer(self._servers(), client_id=client_id, security=self._sign_in())
        )
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = ConsumerStats()
        self._store = store
        self._next_prune: float | None = None
        self.metrics = metrics or MessagingMetrics()
        self.processor = MessageProcessor(
            group_id,
            handler,
            ProcessorDependencies(
                store=store,
                dead_letter=self._dead_letter,
                stopping=lambda: self._stopping,
                stats=self.stats,
                metrics=self.metrics,
                tracer=trace.get_tracer(__name__),
            ),
            retries,
        )
        self.metrics.expect(self.topics, group_id)
        self._lag_reported: set[TopicPartition] = set()
        # When this consumer last knew it had handled every event of its partitions: the time
        # (epoch seconds) of the oldest of the fetches that showed nothing past its position.
        self.caught_up_at: float | None = None
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

    def _sign_in(self) -> Mapping[str, Any]:
        return sasl_options() if self._security is None else self._security

    def _default_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._servers(),
            **self._sign_in(),
            group_id=self.group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_batch,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
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
                    extra=error_fields(exc) | {"group": self.group_id, "retry_in_s": delay},
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
                "processed events prune failed", extra=error_fields(exc) | {"group": self.group_id}
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
        consumer's position, which after a handled batch is the offset it committed. With no
        lag anywhere, `caught_up_at` moves to the oldest of those fetches."""
        consumer = self._consumer
        if consumer is None:
            return
        caught_up, oldest_fetch_ms = True, None
        for tp in consumer.assignment():
            # A rebalance may revoke it while an earlier partition's position is awaited, and
            # aiokafka's highwater() asserts that the partition is assigned.
            if tp not in consumer.assignment():
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                caught_up = False
                continue  # nothing fetched from it yet
            try:
                position = await asyncio.wait_for(consumer.position(tp), LAG_POSITION_WAIT_S)
            except (KafkaError, TimeoutError):
                caught_up = False
                continue  # no position yet (just assigned) or no longer owned
            self.metrics.lag(self.group_id, tp.topic, tp.partition, highwater - position)
            self._lag_reported.add(tp)
            fetched_ms = consumer.last_poll_timestamp(tp)
            if highwater > position or fetched_ms is None:
                caught_up = False
            else:
                oldest_fetch_ms = min(fetched_ms, oldest_fetch_ms or fetched_ms)
        if caught_up and oldest_fetch_ms is not None:
            self.caught_up_at = oldest_fetch_ms / 1000

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
            log.warning("offset commit rejected after a rebalance", extra=error_fields(exc))
        except KafkaError as exc:
            log.warning("offset commit failed; will retry with the next", extra=error_fields(exc))
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
                    extra=error_fields(exc)
                    | {"group": self.group_id, "retry_in_s": round(delay, 2)},
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
        log.debug("ignored while closing", extra=error_fields(exc))
