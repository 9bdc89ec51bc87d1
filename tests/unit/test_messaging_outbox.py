import asyncio
import json
import uuid

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from contracts.cloudevents import cloud_event
from services.common.messaging import outbox
from services.common.messaging.envelope import MalformedEventError
from services.common.messaging.migrations import OUTBOX
from services.common.messaging.outbox import OutboxRelay, OutboxRow
from services.common.migrations import load_migrations
from services.common.retry import Backoff
from tests.support import wait_until
from tests.unit.messaging_fakes import FakeOutboxStore, ProducerFactory

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def rows(count, keys=3):
    result = []
    for i in range(1, count + 1):
        event_id = uuid.uuid4()
        result.append(
            OutboxRow(
                id=i,
                event_id=event_id,
                topic="order-events",
                key=f"order-{i % keys}",
                payload=json.dumps({"id": str(event_id), "seq": i}).encode(),
                headers={},
            )
        )
    return result


def relay_with(store, factory, **options):
    options.setdefault("backoff", Backoff(initial_s=0.001, max_s=0.004))
    return OutboxRelay(None, factory, store=store, **options)


def test_relay_publishes_rows_in_id_order_in_batches_and_marks_each_batch_once():
    store = FakeOutboxStore(rows(25))
    factory = ProducerFactory()
    relay = relay_with(store, factory, batch_size=10)

    async def go():
        return [await relay.run_once() for _ in range(4)]

    assert asyncio.run(go()) == [10, 10, 5, 0]
    assert [json.loads(m.value)["seq"] for m in factory.sent] == list(range(1, 26))
    assert store.mark_calls == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert relay.published_total == 25


def test_relay_sends_the_key_and_payload_of_each_row():
    store = FakeOutboxStore(rows(2))
    factory = ProducerFactory()
    asyncio.run(relay_with(store, factory).run_once())
    first = factory.sent[0]
    assert first.topic == "order-events"
    assert first.key == b"order-1"
    assert first.value == store.rows[0].payload


def test_unacked_batch_stays_unpublished_and_is_resent_whole_in_order():
    store = FakeOutboxStore(rows(6))
    factory = ProducerFactory(plan=[{"fail_sends": 1}])
    relay = relay_with(store, factory, batch_size=3)

    async def go():
        with pytest.raises(outbox.PublishError):
            await relay.run_once()
        assert store.published == set()
        await relay._drop_producer()
        assert await relay.run_once() == 3
        assert await relay.run_once() == 3

    asyncio.run(go())
    # Row 1 (key order-1) failed, rows 2 and 3 (other keys) were acked; the batch is resent
    # whole: at least once, and in id order per key.
    assert [json.loads(m.value)["seq"] for m in factory.sent] == [2, 3, 1, 2, 3, 4, 5, 6]
    assert store.published == set(range(1, 7))


def test_relay_publishes_nothing_while_another_instance_holds_the_batch_lock():
    store = FakeOutboxStore(rows(3), locked_by_other=True)
    factory = ProducerFactory()
    assert asyncio.run(relay_with(store, factory).run_once()) is None
    assert factory.sent == []


def test_relay_backs_off_on_kafka_errors_then_drains_everything_with_a_fresh_producer():
    store = FakeOutboxStore(rows(50))
    factory = ProducerFactory(plan=[{"fail_start": True}, {"fail_start": True}, {"fail_sends": 2}])
    relay = relay_with(store, factory, batch_size=20, poll_interval_s=0.01, listen=False)

    async def go():
        await relay.start()
        await wait_until(lambda: len(store.published) == 50, timeout=5, what="50 rows published")
        await relay.stop()

    asyncio.run(go())
    assert store.published == set(range(1, 51))
    assert relay.failures_total == 3
    assert len(factory.made) == 4
    assert all(p.stopped for p in factory.made if p.started)
    delivered = {}
    for message in factory.sent:
        delivered.setdefault(message.key, []).append(json.loads(message.value)["seq"])
    for sequence in delivered.values():
        first_seen = list(dict.fromkeys(sequence))
        assert first_seen == sorted(first_seen)


def test_backoff_doubles_up_to_its_cap_and_resets_after_success():
    backoff = Backoff(initial_s=0.5, max_s=5.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_only_shortens_delays():
    backoff = Backoff(initial_s=1.0, max_s=1.0, jitter=0.5)
    delays = [backoff.next_delay() for _ in range(50)]
    assert all(0.5 <= d <= 1.0 for d in delays)


def test_relay_stops_gracefully_while_idle_and_closes_its_producer():
    store = FakeOutboxStore(rows(1))
    factory = ProducerFactory()
    relay = relay_with(store, factory, poll_interval_s=30, listen=False)

    async def go():
        await relay.start()
        await wait_until(lambda: store.published == {1}, timeout=5, what="the row published")
        await asyncio.wait_for(relay.stop(), 1.0)

    asyncio.run(go())
    assert store.published == {1}
    assert factory.made[0].stopped


def test_relay_reports_backlog_and_age_of_oldest_unpublished_row():
    store = FakeOutboxStore(rows(4))
    relay = relay_with(store, ProducerFactory(), batch_size=3)

    async def go():
        before = (await relay.backlog(), await relay.oldest_unpublished_age_s())
        await relay.run_once()
        await relay.run_once()
        return before, (await relay.backlog(), await relay.oldest_unpublished_age_s())

    assert asyncio.run(go()) == ((4, 12.5), (0, None))


def test_published_message_continues_the_trace_stored_with_the_row():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    stored = outbox.current_trace_headers(trace.set_span_in_context(NonRecordingSpan(parent)))
    row = rows(1)[0]
    store = FakeOutboxStore([OutboxRow(**{**row.__dict__, "headers": stored})])
    factory = ProducerFactory()
    asyncio.run(relay_with(store, factory, tracer=provider.get_tracer("t")).run_once())

    (span,) = exporter.get_finished_spans()
    assert span.kind is trace.SpanKind.PRODUCER
    assert span.parent.span_id == parent.span_id
    assert span.context.trace_id == TRACE_ID
    sent = factory.sent[0].headers["traceparent"]
    assert sent == f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"


class RecordingConnection:
    def __init__(self, in_transaction=True):
        self.in_transaction = in_transaction
        self.executed = []

    def is_in_transaction(self):
        return self.in_transaction

    async def execute(self, sql, *args):
        self.executed.append((sql, args))


def order_event():
    return cloud_event(
        source="orders", type="shopmesh.order.created.v1", subject="order/1", data={"a": 1}
    )


def test_add_stores_the_event_with_its_trace_context_and_notifies_the_relay():
    conn = RecordingConnection()
    event = order_event()
    span = NonRecordingSpan(
        SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    )

    async def go():
        with trace.use_span(span):
            await outbox.add(conn, "order-events", "order-1", event, {"x-extra": "1"})

    asyncio.run(go())
    ((sql, args),) = conn.executed
    assert "INSERT INTO outbox" in sql and "pg_notify" in sql
    event_id, topic, key, payload, headers, channel, hold_s = args
    assert (event_id, topic, key, channel, hold_s) == (
        uuid.UUID(event["id"]),
        "order-events",
        "order-1",
        "outbox",
        None,
    )
    assert json.loads(payload) == event
    assert json.loads(headers)["traceparent"].startswith(f"00-{TRACE_ID:032x}-")
    assert json.loads(headers)["x-extra"] == "1"


def test_add_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="transaction"):
        asyncio.run(outbox.add(RecordingConnection(False), "t", "k", order_event()))


def test_add_refuses_an_invalid_event():
    with pytest.raises(MalformedEventError):
        asyncio.run(outbox.add(RecordingConnection(), "t", "k", {**order_event(), "id": "x"}))


def test_outbox_migration_creates_the_table_and_the_unpublished_index():
    table, held_back = load_migrations(OUTBOX.directory)
    assert "CREATE TABLE outbox" in table.sql
    assert "event_id uuid NOT NULL UNIQUE" in table.sql
    assert "WHERE published_at IS NULL" in table.sql
    assert "ADD COLUMN not_before timestamptz" in held_back.sql


class DetachableConnection:
    """A pooled connection the pool can take back, as asyncpg does when it sees one break."""

    def __init__(self):
        self.detached = False
        self.channels = []

    def is_closed(self):
        if self.detached:
            raise asyncpg.InterfaceError(
                "cannot call Connection.is_closed(): connection has been released back to the pool"
            )
        return False

    async def add_listener(self, channel, _callback):
        self.channels.append(channel)

    async def remove_listener(self, channel, _callback):
        self.channels.remove(channel)


class ListenPool:
    def __init__(self):
        self.acquired = []

    async def acquire(self, timeout=None):
        self.acquired.append(DetachableConnection())
        return self.acquired[-1]

    async def release(self, _conn):
        pass


def test_relay_listens_anew_after_the_pool_takes_back_its_broken_listen_connection():
    store = FakeOutboxStore(rows(1))
    factory = ProducerFactory()
    pool = ListenPool()
    relay = OutboxRelay(pool, factory, store=store, poll_interval_s=0.01,
                        backoff=Backoff(initial_s=0.001, max_s=0.004))  # fmt: skip

    async def go():
        await relay.start()
        await wait_until(lambda: store.published == {1} and pool.acquired, timeout=5,
                         what="the first row published and a LISTEN connection")  # fmt: skip
        pool.acquired[0].detached = True  # Postgres restarted under the relay
        await wait_until(lambda: len(pool.acquired) == 2 and pool.acquired[1].channels,
                         timeout=5, what="LISTEN on a fresh connection")  # fmt: skip
        assert pool.acquired[1].channels == [outbox.NOTIFY_CHANNEL]
        store.rows.extend(rows(2)[1:])
        await wait_until(lambda: store.published == {1, 2}, timeout=5, what="the new row published")
        await relay.stop()

    asyncio.run(go())
