"""One trace through the outbox and Kafka: the request that writes an outbox row, the relay's
PRODUCER span, the consumer runner's CONSUMER span, and the next event its handler writes.
Kafka and Postgres are the fakes of tests.unit.messaging_fakes and in-memory seams."""

import asyncio
import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts.cloudevents import cloud_event
from services.common.messaging import outbox
from services.common.messaging.envelope import ORIGINAL_TOPIC_HEADER, to_kafka_headers
from services.common.messaging.outbox import OutboxRelay, OutboxRow
from services.common.messaging.processor import (
    MessageProcessor,
    Outcome,
    ProcessorDependencies,
    RetryPolicy,
)
from services.common.retry import Backoff
from tests.unit.messaging_fakes import FakeOutboxStore, ProducerFactory, Record, Sent


class OutboxTable:
    """Rows that `outbox.add` inserts, as the relay would read them back."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []

    def is_in_transaction(self) -> bool:
        return True

    async def execute(self, _sql: str, *args: object) -> None:
        event_id, topic, key, payload, headers, _channel, _hold_s = args
        self.rows.append(
            OutboxRow(
                id=len(self.rows) + 1,
                event_id=event_id,
                topic=topic,
                key=key,
                payload=payload.encode(),
                headers=json.loads(headers),
            )
        )


class InMemoryProcessed:
    async def handle_once(self, _group_id, event, handler):
        await handler(None, event)
        return True


def event(kind: str) -> dict:
    return cloud_event(
        source="shopmesh/orders", type=kind, subject="order/1", data={"orderId": "1"}
    )


def delivered(sent: Sent, offset: int = 0) -> Record:
    return Record(sent.topic, 0, offset, sent.key, sent.value, to_kafka_headers(sent.headers))


def tracing() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def publish(rows: list[OutboxRow], tracer: trace.Tracer) -> list[Sent]:
    factory = ProducerFactory()
    relay = OutboxRelay(
        None, factory, store=FakeOutboxStore(list(rows)), tracer=tracer, backoff=Backoff()
    )
    asyncio.run(relay.run_once())
    return factory.sent


def processor(handler, tracer, dead_letter=None, max_attempts=3) -> MessageProcessor:
    async def no_sleep(_delay: float) -> None:
        return None

    async def refuse(*_args):
        raise AssertionError("not dead-lettered")

    return MessageProcessor(
        "payment-workers",
        handler,
        ProcessorDependencies(
            store=InMemoryProcessed(),
            dead_letter=dead_letter or refuse,
            sleep=no_sleep,
            tracer=tracer,
        ),
        RetryPolicy(max_attempts=max_attempts),
    )


def spans_by_kind(exporter: InMemorySpanExporter) -> dict[SpanKind, list]:
    spans: dict[SpanKind, list] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.kind, []).append(span)
    return spans


def test_request_outbox_producer_consumer_and_the_next_event_are_one_trace():
    tracer, exporter = tracing()
    table = OutboxTable()

    async def request() -> None:
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            await outbox.add(table, "payment-tasks", "1", event("shopmesh.payment.requested.v1"))

    asyncio.run(request())
    (task_message,) = publish(table.rows, tracer)

    async def worker_handler(_conn, _event) -> None:
        await outbox.add(table, "payment-events", "1", event("shopmesh.payment.succeeded.v1"))

    outcome = asyncio.run(processor(worker_handler, tracer).process(delivered(task_message)))
    assert outcome is Outcome.PROCESSED
    (result_message,) = publish(table.rows[1:], tracer)
    asyncio.run(processor(lambda *_: asyncio.sleep(0), tracer).process(delivered(result_message)))

    spans = spans_by_kind(exporter)
    (server,) = spans[SpanKind.SERVER]
    task_publish, result_publish = spans[SpanKind.PRODUCER]
    task_process, result_process = spans[SpanKind.CONSUMER]
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {server.context.trace_id}
    # request -> publish payment-tasks -> process (the worker) -> publish payment-events -> ...
    assert task_publish.parent.span_id == server.context.span_id
    assert task_process.parent.span_id == task_publish.context.span_id
    assert result_publish.parent.span_id == task_process.context.span_id
    assert result_process.parent.span_id == result_publish.context.span_id
    assert task_publish.attributes["messaging.destination.name"] == "payment-tasks"
    assert task_publish.attributes["messaging.kafka.message.key"] == "1"
    assert task_process.attributes["messaging.consumer.group.name"] == "payment-workers"


def test_the_outbox_row_keeps_the_context_of_the_request_that_wrote_it():
    tracer, _ = tracing()
    table = OutboxTable()

    async def request() -> trace.SpanContext:
        with tracer.start_as_current_span("POST /orders") as span:
            await outbox.add(table, "order-events", "1", event("shopmesh.order.created.v1"))
            return span.get_span_context()

    written_by = asyncio.run(request())
    (row,) = table.rows
    assert row.headers["traceparent"] == (
        f"00-{written_by.trace_id:032x}-{written_by.span_id:016x}-{int(written_by.trace_flags):02x}"
    )


def test_a_dead_lettered_message_stays_in_the_trace_of_its_producer():
    tracer, exporter = tracing()
    table = OutboxTable()

    async def request() -> None:
        with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
            await outbox.add(table, "order-events", "1", event("shopmesh.order.created.v1"))

    asyncio.run(request())
    (message,) = publish(table.rows, tracer)
    dead: list[tuple[str, dict[str, str]]] = []

    async def dead_letter(topic, _value, _key, headers) -> None:
        dead.append((topic, headers))

    async def failing(_conn, _event) -> None:
        raise ValueError("cannot handle")

    proc = processor(failing, tracer, dead_letter=dead_letter, max_attempts=1)
    assert asyncio.run(proc.process(delivered(message))) is Outcome.DEAD_LETTERED

    (consumer_span,) = spans_by_kind(exporter)[SpanKind.CONSUMER]
    ((topic, headers),) = dead
    assert topic == "order-events.dlq"
    assert headers[ORIGINAL_TOPIC_HEADER] == "order-events"
    trace_id, parent_id = headers["traceparent"].split("-")[1:3]
    assert int(trace_id, 16) == consumer_span.context.trace_id
    assert int(parent_id, 16) == consumer_span.context.span_id
