import asyncio
import json
import uuid

import asyncpg
import pytest
from aiokafka import TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from contracts.cloudevents import cloud_event
from mesh.components.kafka import CLUSTER_SETTINGS, load_topics
from services.common.messaging import processed
from services.common.messaging.consumer import ConsumerRunner
from services.common.messaging.envelope import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    ORIGINAL_TOPIC_HEADER,
    current_trace_headers,
    serialize,
    to_kafka_headers,
)
from services.common.messaging.processor import (
    MessageProcessor,
    Outcome,
    ProcessorDependencies,
    RetryPolicy,
    is_transient,
    retry_delay,
)
from services.common.retry import Backoff
from tests.support import wait_until
from tests.unit.messaging_fakes import ProducerFactory, Record

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PRODUCER_SPAN_ID = 0x00F067AA0BA902B7


def event_record(offset=0, partition=0, topic="order-events", data=None, headers=None):
    event = cloud_event(
        source="orders", type="shopmesh.order.created.v1", subject="order/1", data=data or {}
    )
    return Record(topic, partition, offset, b"order-1", serialize(event), headers or [])


class FakeStore:
    """processed_events in memory: a failed handler records nothing."""

    def __init__(self, already=()):
        self.processed = set(already)
        self.prunes = []
        self.prune_error = None

    async def handle_once(self, group_id, event, handler):
        if (group_id, event.id) in self.processed:
            return False
        await handler(None, event)
        self.processed.add((group_id, event.id))
        return True

    async def prune(self, group_id, older_than_s):
        self.prunes.append((group_id, older_than_s))
        if self.prune_error:
            raise self.prune_error
        return 0


class Handler:
    def __init__(self, fail_times=0, error=None, poison=()):
        self.fail_times = fail_times
        self.error = error or ValueError("bad amount")
        self.poison = set(poison)
        self.calls = []
        self.handled = []
        self.trace_ids = []

    async def __call__(self, conn, event):
        self.calls.append(event.id)
        self.trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        if event.data.get("poison") or event.id in self.poison:
            raise ValueError("poison")
        if self.fail_times:
            self.fail_times -= 1
            raise self.error
        self.handled.append(event.data.get("seq"))


class DeadLetters:
    def __init__(self, fail_times=0):
        self.fail_times = fail_times
        self.sent = []

    async def __call__(self, topic, value, key, headers):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("kafka down")
        self.sent.append((topic, value, key, headers))


def processor(handler, store=None, dead_letters=None, max_attempts=3, **dependencies):
    sleeps = []

    async def sleep(delay):
        sleeps.append(delay)

    proc = MessageProcessor(
        "orders",
        handler,
        ProcessorDependencies(
            store=store or FakeStore(),
            dead_letter=dead_letters or DeadLetters(),
            sleep=sleep,
            **dependencies,
        ),
        RetryPolicy(
            max_attempts=max_attempts,
            retry_backoff=lambda: Backoff(initial_s=0.2, max_s=2.0),
            transient_backoff=lambda: Backoff(initial_s=0.5, max_s=5.0),
        ),
    )
    return proc, sleeps


def test_new_event_is_handled_once_and_counted():
    handler = Handler()
    proc, _ = processor(handler)
    assert asyncio.run(proc.process(event_record())) is Outcome.PROCESSED
    assert len(handler.calls) == 1
    assert (proc.stats.consumed, proc.stats.processed) == (1, 1)


def test_already_processed_event_is_skipped_without_calling_the_handler():
    record = event_record()
    event_id = uuid.UUID(json.loads(record.value)["id"])
    handler = Handler()
    proc, _ = processor(handler, store=FakeStore({("orders", event_id)}))
    assert asyncio.run(proc.process(record)) is Outcome.DUPLICATE
    assert handler.calls == []
    assert proc.stats.duplicates == 1


def test_redelivered_event_is_handled_only_the_first_time():
    handler = Handler()
    proc, _ = processor(handler)
    record = event_record()

    async def go():
        return [await proc.process(record) for _ in range(3)]

    assert asyncio.run(go()) == [Outcome.PROCESSED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert len(handler.calls) == 1


def test_failing_handler_is_retried_with_backoff_then_dead_lettered_with_error_headers():
    handler = Handler(fail_times=99)
    dead = DeadLetters()
    proc, sleeps = processor(handler, dead_letters=dead, max_attempts=3)
    record = event_record(headers=[("custom", b"kept")])
    assert asyncio.run(proc.process(record)) is Outcome.DEAD_LETTERED
    assert len(handler.calls) == 3
    assert sleeps == [0.2, 0.4]
    ((topic, value, key, headers),) = dead.sent
    assert (topic, value, key) == ("order-events.dlq", record.value, record.key)
    assert headers[ERROR_HEADER] == "ValueError: bad amount"
    assert headers[ATTEMPTS_HEADER] == "3"
    assert headers[ORIGINAL_TOPIC_HEADER] == "order-events"
    assert headers["custom"] == "kept"
    assert (proc.stats.dead_lettered, proc.stats.handler_failures) == (1, 3)


def test_handler_that_recovers_on_a_retry_is_not_dead_lettered():
    handler = Handler(fail_times=2)
    dead = DeadLetters()
    proc, _ = processor(handler, dead_letters=dead, max_attempts=3)
    assert asyncio.run(proc.process(event_record())) is Outcome.PROCESSED
    assert dead.sent == []


@pytest.mark.parametrize("value", [b"{not json", b'{"specversion": "1.0"}', None])
def test_unparsable_message_goes_to_the_dlq_at_once(value):
    handler = Handler()
    dead = DeadLetters()
    proc, sleeps = processor(handler, dead_letters=dead)
    record = Record("order-events", 2, 7, b"k", value)
    assert asyncio.run(proc.process(record)) is Outcome.DEAD_LETTERED
    assert handler.calls == []
    assert sleeps == []
    ((topic, sent_value, _, headers),) = dead.sent
    assert topic == "order-events.dlq"
    assert sent_value == value
    assert headers[ATTEMPTS_HEADER] == "0"
    assert headers[ERROR_HEADER].startswith("MalformedEventError")


def test_database_outage_is_retried_without_using_up_attempts():
    handler = Handler(fail_times=5, error=asyncpg.CannotConnectNowError("starting up"))
    dead = DeadLetters()
    proc, sleeps = processor(handler, dead_letters=dead, max_attempts=3)
    assert asyncio.run(proc.process(event_record())) is Outcome.PROCESSED
    assert dead.sent == []
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_dlq_publish_failures_are_retried_until_the_message_is_parked():
    dead = DeadLetters(fail_times=2)
    proc, _ = processor(Handler(fail_times=99), dead_letters=dead, max_attempts=1)
    assert asyncio.run(proc.process(event_record())) is Outcome.DEAD_LETTERED
    assert len(dead.sent) == 1


def test_stopping_during_retries_abandons_the_message_uncommitted():
    stopping = False

    class StopAfterFirstFailure(Handler):
        async def __call__(self, conn, event):
            nonlocal stopping
            stopping = True
            await super().__call__(conn, event)

    proc, _ = processor(StopAfterFirstFailure(fail_times=99), stopping=lambda: stopping)
    assert asyncio.run(proc.process(event_record())) is Outcome.ABANDONED
    assert proc.stats.dead_lettered == 0


def test_retry_decision_dead_letters_after_the_last_attempt():
    backoff = Backoff(initial_s=1.0, max_s=10.0)
    assert [retry_delay(n, 3, backoff) for n in (1, 2, 3)] == [1.0, 2.0, None]


def test_connection_errors_are_transient_and_handler_bugs_are_not():
    assert is_transient(ConnectionRefusedError())
    assert is_transient(asyncpg.ConnectionDoesNotExistError("gone"))
    assert is_transient(asyncpg.DeadlockDetectedError("deadlock"))
    assert not is_transient(ValueError("bad"))
    assert not is_transient(asyncpg.UniqueViolationError("dup"))


def test_handler_runs_in_a_consumer_span_that_is_a_child_of_the_producer_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer_span = NonRecordingSpan(
        SpanContext(TRACE_ID, PRODUCER_SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    )
    headers = to_kafka_headers(current_trace_headers(trace.set_span_in_context(producer_span)))
    handler = Handler()
    proc, _ = processor(handler, tracer=provider.get_tracer("test"))
    asyncio.run(proc.process(event_record(headers=headers)))

    (span,) = exporter.get_finished_spans()
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == PRODUCER_SPAN_ID
    assert span.attributes["messaging.destination.name"] == "order-events"
    assert handler.trace_ids == [TRACE_ID]


def test_dead_lettered_message_carries_the_trace_of_the_consumer_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer_span = NonRecordingSpan(
        SpanContext(TRACE_ID, PRODUCER_SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    )
    headers = to_kafka_headers(current_trace_headers(trace.set_span_in_context(producer_span)))
    dead = DeadLetters()
    proc, _ = processor(
        Handler(fail_times=9), dead_letters=dead, max_attempts=1, tracer=provider.get_tracer("t")
    )
    asyncio.run(proc.process(event_record(headers=headers)))
    (span,) = exporter.get_finished_spans()
    traceparent = dead.sent[0][3]["traceparent"]
    assert traceparent == f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"


class FakeConsumer:
    def __init__(self):
        self.commits = []

    async def commit(self, offsets):
        self.commits.append(dict(offsets))


def runner_with(handler, store=None, **options):
    factory = ProducerFactory()
    runner = ConsumerRunner(
        "order-events",
        "orders",
        handler,
        None,
        store=store or FakeStore(),
        producer_factory=factory,
        retries=RetryPolicy(retry_backoff=lambda: Backoff(initial_s=0.001, max_s=0.001)),
        **options,
    )
    runner._consumer = FakeConsumer()
    return runner, factory


def test_batch_commits_each_partition_at_the_next_offset_after_handling():
    handler = Handler()
    runner, _ = runner_with(handler)
    p0, p1 = TopicPartition("order-events", 0), TopicPartition("order-events", 1)
    batch = {
        p0: [event_record(offset=o, partition=0, data={"seq": o}) for o in (10, 11, 12)],
        p1: [event_record(offset=o, partition=1, data={"seq": o}) for o in (3, 4)],
    }
    asyncio.run(runner.process_batch(batch))
    assert handler.handled == [10, 11, 12, 3, 4]
    assert runner._consumer.commits == [{p0: 13, p1: 5}]


def test_poison_message_is_dead_lettered_and_later_messages_on_its_partition_still_flow():
    handler = Handler()
    runner, factory = runner_with(handler)
    p0 = TopicPartition("order-events", 0)
    records = [event_record(offset=0, data={"seq": 0})]
    records.append(event_record(offset=1, data={"seq": 1, "poison": True}))
    records.append(event_record(offset=2, data={"seq": 2}))
    asyncio.run(runner.process_batch({p0: records}))
    assert handler.handled == [0, 2]
    assert [m.topic for m in factory.sent] == ["order-events.dlq"]
    assert factory.sent[0].headers[ATTEMPTS_HEADER] == "3"
    assert runner._consumer.commits == [{p0: 3}]
    assert (runner.stats.processed, runner.stats.dead_lettered) == (2, 1)


def test_batch_fetched_before_a_rebalance_is_dropped_uncommitted():
    handler = Handler()
    runner, _ = runner_with(handler)
    stale_generation = runner._generation
    asyncio.run(runner._on_revoked(set()))
    batch = {TopicPartition("order-events", 0): [event_record(offset=5)]}
    asyncio.run(runner.process_batch(batch, stale_generation))
    assert handler.calls == []
    assert runner._consumer.commits == []


def test_revocation_lets_the_message_in_flight_finish_and_commits_it_before_giving_up():
    p0 = TopicPartition("order-events", 0)
    runner = None
    revoke_task = None

    class RevokeDuringFirst(Handler):
        async def __call__(self, conn, event):
            nonlocal revoke_task
            if revoke_task is None:
                revoke_task = asyncio.create_task(runner._on_revoked({p0}))
                await asyncio.sleep(0.01)  # the rebalance waits for this message
                assert not revoke_task.done()
            await super().__call__(conn, event)

    handler = RevokeDuringFirst()
    runner, _ = runner_with(handler)
    records = [event_record(offset=o, data={"seq": o}) for o in (0, 1, 2)]

    async def go():
        await runner.process_batch({p0: records}, runner._generation)
        await revoke_task

    asyncio.run(go())
    assert handler.handled == [0]
    assert runner._consumer.commits == [{p0: 1}]


def test_batch_dropped_after_a_rebalance_rewinds_the_partitions_still_owned():
    class Seeking(FakeConsumer):
        def __init__(self, owned):
            super().__init__()
            self.owned = owned
            self.seeks = []

        def assignment(self):
            return self.owned

        def seek(self, tp, offset):
            self.seeks.append((tp, offset))

    runner, _ = runner_with(Handler())
    p0, p1 = TopicPartition("order-events", 0), TopicPartition("order-events", 1)
    runner._consumer = Seeking({p0})
    stale_generation = runner._generation
    asyncio.run(runner._on_revoked(set()))
    batch = {p0: [event_record(offset=7), event_record(offset=8)], p1: [event_record(offset=2)]}
    asyncio.run(runner.process_batch(batch, stale_generation))
    assert runner._consumer.seeks == [(p0, 7)]
    assert runner._consumer.commits == []


def test_handled_events_are_remembered_longer_than_kafka_keeps_the_messages():
    retention_s = int(CLUSTER_SETTINGS["log.retention.hours"]) * 3600
    assert retention_s < processed.PROCESSED_RETENTION_S
    assert all("retention.ms" not in topic.configs for topic in load_topics())


def test_processed_events_are_pruned_once_per_interval_and_a_failed_prune_is_only_logged():
    store = FakeStore()
    runner, _ = runner_with(Handler(), store=store)

    async def go():
        await runner.prune_if_due()  # the first prune waits an interval after start
        runner._next_prune = 0.0
        await runner.prune_if_due()
        await runner.prune_if_due()  # not due again yet
        store.prune_error = asyncpg.ConnectionDoesNotExistError("gone")
        runner._next_prune = 0.0
        await runner.prune_if_due()

    asyncio.run(go())
    assert store.prunes == [("orders", processed.PROCESSED_RETENTION_S)] * 2


class RevokedWhilePositionIsAwaited:
    """An aiokafka consumer whose group takes every other partition away while the first
    partition's position is awaited; highwater() asserts the partition is assigned, as
    aiokafka's does."""

    def __init__(self, partitions):
        self.owned = set(partitions)
        self.asked = []

    def assignment(self):
        return set(self.owned)

    def highwater(self, tp):
        assert tp in self.owned, "Partition is not assigned"
        return 10

    async def position(self, tp):
        self.asked.append(tp)
        self.owned = {tp}
        return 4

    def last_poll_timestamp(self, tp):
        return 1_000


def test_lag_is_recorded_for_what_is_still_owned_when_a_rebalance_revokes_partitions_mid_way():
    partitions = [TopicPartition("payment-tasks", n) for n in range(6)]
    runner, _ = runner_with(Handler())
    runner._consumer = consumer = RevokedWhilePositionIsAwaited(partitions)
    asyncio.run(runner.record_lag())
    assert len(consumer.asked) == 1
    assert runner._lag_reported == set(consumer.asked)


class ScriptedConsumer:
    """An aiokafka consumer that joins, then fails its first fetch with `error` (a bug, not a
    Kafka error); `stop()` is what leaves the group."""

    def __init__(self, made, error=None):
        self.error = error
        self.started = False
        self.stopped = False
        made.append(self)

    def subscribe(self, topics, listener):
        self.topics = topics

    async def start(self):
        self.started = True

    async def stop(self):
        self.stopped = True

    async def getmany(self, timeout_ms, max_records):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self):
        return set()


def test_a_consumer_that_fails_unexpectedly_leaves_and_a_new_one_joins_the_group():
    made = []
    errors = [AssertionError("Partition is not assigned")]
    runner, _ = runner_with(
        Handler(),
        consumer_factory=lambda: ScriptedConsumer(made, errors.pop(0) if errors else None),
        poll_timeout_ms=10,
    )
    runner._consumer = None
    runner._startup_backoff = Backoff(initial_s=0.001, max_s=0.001)

    async def go():
        await runner.start()
        await wait_until(lambda: len(made) == 2, timeout=5, what="a second consumer")
        await wait_until(lambda: made[1].started, timeout=5, what="the second consumer joining")
        running = not made[1].stopped
        await runner.stop()
        return running

    assert asyncio.run(go())
    assert made[0].stopped and made[1].stopped
    assert runner.stats.restarts == 1


def test_offsets_are_committed_at_most_once_per_interval_and_at_once_on_a_rebalance():
    runner, _ = runner_with(Handler(), commit_interval_s=60)
    p0 = TopicPartition("order-events", 0)

    async def go():
        await runner.process_batch({p0: [event_record(offset=0)]}, runner._generation)
        await runner.process_batch({p0: [event_record(offset=1)]}, runner._generation)
        await runner.process_batch({p0: [event_record(offset=2)]}, runner._generation)
        before_rebalance = list(runner._consumer.commits)
        await runner._on_revoked({p0})
        return before_rebalance

    assert asyncio.run(go()) == [{p0: 1}]
    assert runner._consumer.commits == [{p0: 1}, {p0: 3}]
