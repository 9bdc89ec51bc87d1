"""Handling one Kafka message: parse the CloudEvent, continue the producer's trace, run the
handler once per event id, retry, dead-letter. No Kafka consumer involved
(services.common.messaging.consumer runs one and hands it each record).

The handler runs in the Postgres transaction that records `(group, event id)` in
`processed_events`: an event already recorded was handled before (a redelivery, or the outbox
relay re-publishing after a crash) and is skipped. A handler that raises is retried
(`RetryPolicy.max_attempts`, with backoff); then the original message goes to `<topic>.dlq`
with `shopmesh-error`, `shopmesh-attempts`, `shopmesh-original-topic`. A message that is not a
valid event goes to the DLQ at once. Errors that mean "Postgres is unreachable right now"
(`is_transient`) are retried without limit instead: an outage must not dead-letter every
message.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common.db import DATABASE_UNAVAILABLE
from services.common.logging import error_fields
from services.common.messaging.envelope import (
    Event,
    MalformedEventError,
    current_trace_headers,
    dlq_headers,
    dlq_topic,
    extract_context,
    from_kafka_headers,
    parse,
)
from services.common.messaging.processed import Handler, ProcessedStore
from services.common.metrics import MessagingMetrics
from services.common.retry import Backoff

log = logging.getLogger(__name__)

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


DeadLetterSend = Callable[[str, bytes | None, bytes | None, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How a consumer group retries a message. A handler that raises is tried `max_attempts`
    times in all, `retry_backoff` apart, then dead-lettered; an error `is_transient` says is
    about reaching Postgres is retried without limit, `transient_backoff` apart (as is a DLQ
    that does not take the message)."""

    max_attempts: int = 3
    retry_backoff: Callable[[], Backoff] = lambda: Backoff(initial_s=0.2, max_s=2.0)
    transient_backoff: Callable[[], Backoff] = lambda: Backoff(initial_s=0.5, max_s=5.0)
    is_transient: Callable[[BaseException], bool] = is_transient

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


DEFAULT_RETRIES = RetryPolicy()


@dataclass
class ProcessorDependencies:
    """What a MessageProcessor works with besides its handler: the record of handled events,
    the DLQ, whether its consumer is stopping, and its sleep, clock, counters, metrics and
    tracer."""

    store: ProcessedStore
    dead_letter: DeadLetterSend
    stopping: Callable[[], bool] = lambda: False
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.time
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    metrics: MessagingMetrics = field(default_factory=MessagingMetrics)
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer(__name__))


class MessageProcessor:
    """Handles one record: parse, dedupe, retry, dead-letter. No Kafka consumer involved."""

    def __init__(
        self,
        group_id: str,
        handler: Handler,
        dependencies: ProcessorDependencies,
        retries: RetryPolicy = DEFAULT_RETRIES,
    ) -> None:
        self.group_id = group_id
        self._handler = handler
        self._deps = dependencies
        self._retries = retries

    @property
    def stats(self) -> ConsumerStats:
        return self._deps.stats

    @property
    def metrics(self) -> MessagingMetrics:
        return self._deps.metrics

    async def process(self, record: Record) -> Outcome:
        self._deps.stats.consumed += 1
        headers = from_kafka_headers(record.headers)
        with self._deps.tracer.start_as_current_span(
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
            age = event_age_s(event, self._deps.clock())
            if age is not None:
                self._deps.metrics.message_age(record.topic, self.group_id, age)
            return await self._handle(record, headers, event, span)

    async def _handle(
        self, record: Record, headers: dict[str, str], event: Event, span: trace.Span
    ) -> Outcome:
        attempt = 0
        retry_backoff = self._retries.retry_backoff()
        transient_backoff = self._retries.transient_backoff()
        while True:
            if self._deps.stopping():
                return Outcome.ABANDONED
            try:
                first = await self._deps.store.handle_once(self.group_id, event, self._handler)
            except Exception as exc:
                if self._retries.is_transient(exc):
                    delay = transient_backoff.next_delay()
                    log.warning(
                        "database unavailable while handling an event; retrying",
                        extra=_where(record) | error_fields(exc) | {"retry_in_s": round(delay, 3)},
                    )
                    self._deps.metrics.consumed(record.topic, self.group_id, "retried")
                    await self._deps.sleep(delay)
                    continue
                attempt += 1
                self._deps.stats.handler_failures += 1
                span.record_exception(exc)
                retry_in = retry_delay(attempt, self._retries.max_attempts, retry_backoff)
                if retry_in is None:
                    span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {exc}"))
                    log.error(
                        "handler failed; dead-lettering the event",
                        extra=_where(record)
                        | error_fields(exc)
                        | {"event_id": str(event.id), "attempts": attempt},
                    )
                    return await self._send_to_dlq(record, headers, exc, attempts=attempt)
                log.warning(
                    "handler failed; retrying",
                    extra=_where(record)
                    | error_fields(exc)
                    | {"event_id": str(event.id), "attempt": attempt, "retry_in_s": retry_in},
                )
                self._deps.metrics.consumed(record.topic, self.group_id, "retried")
                await self._deps.sleep(retry_in)
                continue
            if first:
                self._deps.stats.processed += 1
                self._deps.metrics.consumed(record.topic, self.group_id, "ok")
                return Outcome.PROCESSED
            self._deps.stats.duplicates += 1
            self._deps.metrics.consumed(record.topic, self.group_id, "duplicate")
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
        backoff = self._retries.transient_backoff()
        while True:
            if self._deps.stopping():
                return Outcome.ABANDONED
            try:
                await self._deps.dead_letter(topic, record.value, record.key, out_headers)
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning(
                    "could not publish to the DLQ; retrying",
                    extra=_where(record) | error_fields(exc) | {"dlq": topic, "retry_in_s": delay},
                )
                await self._deps.sleep(delay)
                continue
            self._deps.stats.dead_lettered += 1
            self._deps.metrics.consumed(record.topic, self.group_id, "dead_lettered")
            self._deps.metrics.dead_lettered(record.topic)
            self._deps.metrics.produced(topic)
            return Outcome.DEAD_LETTERED


def _where(record: Record) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
