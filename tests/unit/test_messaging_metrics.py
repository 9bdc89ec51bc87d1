"""The Kafka, outbox, DLQ and WebSocket metrics move as the messaging code works (no network)."""

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from aiokafka import TopicPartition
from prometheus_client import REGISTRY, generate_latest

from contracts.cloudevents import cloud_event
from mesh.runtime.kafka import reports_group_membership
from services.common import metrics
from services.common.messaging.consumer import ConsumerRunner, _Rebalance
from services.common.messaging.envelope import parse, serialize
from services.common.messaging.outbox import OutboxRelay, OutboxRow
from services.common.messaging.processor import (
    MessageProcessor,
    ProcessorDependencies,
    RetryPolicy,
    event_age_s,
)
from services.common.metrics import MessagingMetrics
from services.common.retry import Backoff
from services.notifications.hub import Hub
from tests.support import wait_for
from tests.unit.messaging_fakes import FakeOutboxStore, ProducerFactory, Record


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def unique(prefix: str) -> str:
    """A service label of its own, so tests never read each other's series."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


WRITTEN = "2026-11-29T10:15:00.000Z"
WRITTEN_EPOCH = datetime(2026, 11, 29, 10, 15, tzinfo=UTC).timestamp()


def record(offset: int = 0, data: dict | None = None, value: bytes | None = None) -> Record:
    event = cloud_event(source="orders", type="shopmesh.order.created.v1", subject="order/1",
                        data=data or {}) | {"time": WRITTEN}  # fmt: skip
    return Record("order-events", 0, offset, b"order-1", value or serialize(event))


class Store:
    def __init__(self) -> None:
        self.seen: set = set()

    async def handle_once(self, group_id, event, handler):
        if event.id in self.seen:
            return False
        await handler(None, event)
        self.seen.add(event.id)
        return True


async def handler(_conn, event) -> None:
    if event.data.get("poison"):
        raise ValueError("poison")


async def dead_letter(topic, value, key, headers) -> None:
    return None


async def no_sleep(_delay: float) -> None:
    return None


def processor(service: str, now: float = 0.0) -> MessageProcessor:
    return MessageProcessor(
        "orders",
        handler,
        ProcessorDependencies(
            store=Store(),
            dead_letter=dead_letter,
            sleep=no_sleep,
            metrics=MessagingMetrics(service),
            clock=lambda: now,
        ),
        RetryPolicy(retry_backoff=lambda: Backoff(initial_s=0.001, max_s=0.001)),
    )


def consumed(service: str, outcome: str) -> float | None:
    return sample(
        "shopmesh_kafka_messages_consumed_total",
        service=service, topic="order-events", group="orders", outcome=outcome,
    )  # fmt: skip


def test_each_outcome_of_a_message_is_counted_and_a_dead_letter_counts_in_the_dlq() -> None:
    service = unique("orders")
    proc = processor(service)
    ok = record(0)
    asyncio.run(proc.process(ok))
    asyncio.run(proc.process(ok))  # redelivered: a duplicate
    asyncio.run(proc.process(record(1, data={"poison": True})))  # 3 attempts, then the DLQ
    asyncio.run(proc.process(record(2, value=b"not json")))  # malformed: the DLQ at once
    assert consumed(service, "ok") == 1
    assert consumed(service, "duplicate") == 1
    assert consumed(service, "retried") == 2
    assert consumed(service, "dead_lettered") == 2
    assert sample("shopmesh_dlq_messages_total", service=service, topic="order-events") == 2
    produced = sample(
        "shopmesh_kafka_messages_produced_total", service=service, topic="order-events.dlq"
    )
    assert produced == 2


def test_the_age_of_an_event_is_observed_from_its_time_to_its_handling() -> None:
    service = unique("orders")
    proc = processor(service, now=WRITTEN_EPOCH + 0.3)  # handled 0.3 s after it was written
    asyncio.run(proc.process(record(0)))
    labels = {"service": service, "topic": "order-events", "group": "orders"}
    assert sample("shopmesh_kafka_message_age_seconds_count", **labels) == 1
    assert sample("shopmesh_kafka_message_age_seconds_bucket", le="0.25", **labels) == 0
    assert sample("shopmesh_kafka_message_age_seconds_bucket", le="0.5", **labels) == 1


def test_an_event_time_without_a_zone_or_unreadable_has_no_age() -> None:
    event = parse(record(0).value)
    for bad in ("2026-11-29T10:15:00", "yesterday", None):
        assert event_age_s(replace(event, time=bad), WRITTEN_EPOCH) is None
    assert event_age_s(replace(event, time="2026-11-29T10:14:59.500Z"), WRITTEN_EPOCH) == 0.5


def test_a_consumers_counters_and_age_histogram_exist_at_zero_before_its_first_message() -> None:
    service = unique("notifications")
    ConsumerRunner(
        ["order-events", "payment-events"], "notifications", handler, None,
        store=Store(), metrics=MessagingMetrics(service),
    )  # fmt: skip
    for topic in ("order-events", "payment-events"):
        assert sample("shopmesh_dlq_messages_total", service=service, topic=topic) == 0
        age = {"service": service, "topic": topic, "group": "notifications"}
        assert sample("shopmesh_kafka_message_age_seconds_count", **age) == 0
        assert sample("shopmesh_kafka_message_age_seconds_sum", **age) == 0
        for le in ("0.5", "+Inf"):
            assert sample("shopmesh_kafka_message_age_seconds_bucket", le=le, **age) == 0
        for outcome in metrics.CONSUMED_OUTCOMES:
            value = sample(
                "shopmesh_kafka_messages_consumed_total",
                service=service, topic=topic, group="notifications", outcome=outcome,
            )  # fmt: skip
            assert value == 0


class LaggingConsumer:
    """The assignment, high watermarks, positions and last fetches (ms) of an aiokafka
    consumer."""

    def __init__(self, highwater: dict, position: dict, fetched_ms: dict | None = None) -> None:
        self._highwater = highwater
        self._position = position
        self._fetched_ms = fetched_ms or {}

    def assignment(self) -> set:
        return set(self._highwater)

    def highwater(self, tp):
        return self._highwater[tp]

    async def position(self, tp):
        return self._position[tp]

    def last_poll_timestamp(self, tp):
        return self._fetched_ms.get(tp)


def test_lag_is_high_watermark_minus_position_and_forgotten_when_revoked() -> None:
    service = unique("orders")
    p0, p1, p2 = (TopicPartition("payment-events", n) for n in range(3))
    runner = ConsumerRunner(
        "payment-events", "orders", handler, None, store=Store(), metrics=MessagingMetrics(service)
    )
    runner._consumer = LaggingConsumer({p0: 1500, p1: 40, p2: None}, {p0: 300, p1: 40})
    asyncio.run(runner.record_lag())

    def lag(partition: str) -> float | None:
        return sample(
            "shopmesh_kafka_consumer_lag",
            service=service, group="orders", topic="payment-events", partition=partition,
        )  # fmt: skip

    assert (lag("0"), lag("1"), lag("2")) == (1200, 0, None)
    asyncio.run(runner._on_revoked({p0}))
    assert (lag("0"), lag("1")) == (None, 0)


def test_a_consumer_with_nothing_left_to_handle_is_caught_up_as_of_its_oldest_fetch() -> None:
    p0, p1 = (TopicPartition("user-events", n) for n in range(2))
    runner = ConsumerRunner("user-events", "auth-cache-auth-1", handler, None, store=Store())
    runner._consumer = LaggingConsumer({p0: 7, p1: 3}, {p0: 7, p1: 3}, {p0: 5_000, p1: 9_000})
    asyncio.run(runner.record_lag())
    assert runner.caught_up_at == 5.0


def test_a_partition_behind_or_never_fetched_leaves_caught_up_where_it_was() -> None:
    p0 = TopicPartition("user-events", 0)
    runner = ConsumerRunner("user-events", "auth-cache-auth-1", handler, None, store=Store())
    runner._consumer = LaggingConsumer({p0: 7}, {p0: 7}, {p0: 5_000})
    asyncio.run(runner.record_lag())
    for behind in [LaggingConsumer({p0: 8}, {p0: 7}, {p0: 6_000}), LaggingConsumer({p0: None}, {})]:
        runner._consumer = behind
        asyncio.run(runner.record_lag())
        assert runner.caught_up_at == 5.0


def rows(topics: list[str]) -> list[OutboxRow]:
    result = []
    for i, topic in enumerate(topics, start=1):
        event_id = uuid.uuid4()
        payload = json.dumps({"id": str(event_id)}).encode()
        result.append(OutboxRow(i, event_id, topic, f"k{i}", payload, {}))
    return result


def test_the_relay_counts_acked_messages_per_topic_and_reports_its_backlog() -> None:
    service = unique("orders")
    store = FakeOutboxStore(rows(["order-events", "order-events", "payment-tasks"]))
    relay = OutboxRelay(
        None, ProducerFactory(), store=store, metrics=MessagingMetrics(service),
        backlog_interval_s=0.01,
    )  # fmt: skip

    async def backlog_is(count: int, what: str) -> None:
        await relay.start()
        try:
            await asyncio.to_thread(
                wait_for,
                lambda: sample("shopmesh_outbox_backlog", service=service) == count,
                timeout=5,
                what=what,
            )
        finally:
            await relay.stop()

    async def go() -> None:
        store.locked_by_other = True  # another relay holds the batch: nothing is published
        await backlog_is(3, "the backlog gauge to count the three unpublished rows")
        assert sample("shopmesh_outbox_oldest_age_seconds", service=service) == 12.5
        store.locked_by_other = False
        await backlog_is(0, "the backlog gauge to show the drained outbox")

    asyncio.run(go())

    def produced(topic: str) -> float | None:
        return sample("shopmesh_kafka_messages_produced_total", service=service, topic=topic)

    assert (produced("order-events"), produced("payment-tasks")) == (2, 1)
    assert sample("shopmesh_outbox_oldest_age_seconds", service=service) == 0


class Socket:
    close_code = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send_str(self, data: str) -> None:
        await self.release.wait()  # a slow client: messages stay queued
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.release.set()
        return True


def test_the_websocket_gauges_read_the_hubs_connections_and_queues_at_scrape() -> None:
    service = unique("notifications")
    hub = Hub()
    metrics.watch_websockets(service, lambda: hub.connection_count, lambda: hub.queue_depth)

    async def go() -> None:
        a, b = Socket(), Socket()
        first = hub.connect("alice", a, None)
        hub.connect("bob", b, None)
        hub.publish("alice", {"id": "n1"})
        hub.publish("alice", {"id": "n2"})
        # Nothing has run the writers yet: alice's hello, n1 and n2 and bob's hello wait.
        assert sample("shopmesh_websocket_connections", service=service) == 2
        assert sample("shopmesh_websocket_queue_depth", service=service) == 4
        await hub.disconnect(first)
        assert sample("shopmesh_websocket_connections", service=service) == 1
        await hub.shutdown()

    asyncio.run(go())


def test_a_consumer_reports_its_group_membership_from_assignment_to_revocation() -> None:
    service = unique("payments-worker")
    runner = ConsumerRunner(
        "payment-tasks", "payment-workers", handler, None, store=Store(),
        metrics=MessagingMetrics(service),
    )  # fmt: skip

    def member() -> float | None:
        return sample("shopmesh_kafka_consumer_group_member", service=service,
                      group="payment-workers")  # fmt: skip

    assert member() == 0
    listener = _Rebalance(runner)
    asyncio.run(listener.on_partitions_assigned([TopicPartition("payment-tasks", 0)]))
    assert member() == 1
    asyncio.run(listener.on_partitions_revoked([TopicPartition("payment-tasks", 0)]))
    assert member() == 0
    asyncio.run(listener.on_partitions_assigned([]))
    assert member() == 1
    asyncio.run(runner._shutdown())
    assert member() == 0


def test_the_runtime_reads_membership_from_a_consumers_metrics() -> None:
    service = unique("payments-worker")

    def exposition() -> str:
        lines = generate_latest(REGISTRY).decode().splitlines()
        return "\n".join(line for line in lines if service in line or line.startswith("#"))

    MessagingMetrics(service).group_member("payment-workers", True)
    assert reports_group_membership(exposition(), "payment-workers")
    assert not reports_group_membership(exposition(), "orders")
    MessagingMetrics(service).group_member("payment-workers", False)
    assert not reports_group_membership(exposition(), "payment-workers")
