import json
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from contracts.cloudevents import cloud_event
from services.common.config import ConfigError
from services.common.messaging.envelope import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    MAX_ERROR_HEADER_CHARS,
    ORIGINAL_TOPIC_HEADER,
    MalformedEventError,
    current_trace_headers,
    dlq_headers,
    dlq_topic,
    extract_context,
    from_kafka_headers,
    message_key,
    parse,
    serialize,
    to_kafka_headers,
)
from services.common.messaging.producer import PRODUCER_DEFAULTS, bootstrap_servers

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def order_event(**overrides):
    event = cloud_event(
        source="orders",
        type="shopmesh.order.payment_requested.v1",
        subject="order/8f14e45f",
        data={"orderId": "8f14e45f", "amount": 1500, "currency": "RUB"},
    )
    event.update(overrides)
    return event


def sampled_context():
    span = NonRecordingSpan(
        SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    )
    return trace.set_span_in_context(span)


def test_event_survives_serialize_and_parse():
    event = order_event()
    parsed = parse(serialize(event))
    assert parsed.id == uuid.UUID(event["id"])
    assert parsed.source == "shopmesh/orders"
    assert parsed.type == "shopmesh.order.payment_requested.v1"
    assert parsed.subject == "order/8f14e45f"
    assert parsed.time == event["time"]
    assert parsed.data == event["data"]
    assert parsed.attributes == event


def test_serialized_event_is_compact_utf8_json():
    value = serialize(order_event(data={"note": "оплата"}))
    assert json.loads(value.decode())["data"] == {"note": "оплата"}
    assert b" " not in value.replace("оплата".encode(), b"")


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (None, "tombstone"),
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps(order_event(specversion="0.3")).encode(), "specversion"),
        (json.dumps({k: v for k, v in order_event().items() if k != "id"}).encode(), "id"),
        (json.dumps(order_event(id="42")).encode(), "UUID"),
        (json.dumps(order_event(source="")).encode(), "source"),
        (json.dumps(order_event(type=7)).encode(), "type"),
        (json.dumps({k: v for k, v in order_event().items() if k != "data"}).encode(), "data"),
        (json.dumps(order_event(data="text")).encode(), "data"),
        (json.dumps(order_event(datacontenttype="text/plain")).encode(), "datacontenttype"),
        (json.dumps(order_event(subject=5)).encode(), "subject"),
    ],
)
def test_malformed_message_is_rejected_with_a_reason(value, complaint):
    with pytest.raises(MalformedEventError, match=complaint):
        parse(value)


def test_serialize_refuses_an_invalid_event():
    with pytest.raises(MalformedEventError, match="specversion"):
        serialize(order_event(specversion="2.0"))


def test_kafka_key_is_the_aggregate_id_as_utf8():
    order_id = uuid.UUID("8f14e45f-0000-4000-8000-000000000001")
    assert message_key(order_id) == b"8f14e45f-0000-4000-8000-000000000001"
    assert message_key("alice") == b"alice"
    with pytest.raises(ValueError):
        message_key("")


def test_trace_headers_carry_the_current_span_as_w3c_traceparent():
    headers = current_trace_headers(sampled_context())
    assert headers["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    assert set(headers) <= {"traceparent", "tracestate"}


def test_trace_headers_are_empty_without_a_span():
    assert current_trace_headers(trace.set_span_in_context(trace.INVALID_SPAN)) == {}


def test_trace_context_is_extracted_from_headers():
    headers = current_trace_headers(sampled_context())
    span_context = trace.get_current_span(extract_context(headers)).get_span_context()
    assert span_context.trace_id == TRACE_ID
    assert span_context.span_id == SPAN_ID
    assert span_context.is_remote


def test_kafka_headers_round_trip_and_skip_undecodable_values():
    headers = to_kafka_headers({"traceparent": "00-abc", "x": "é"})
    assert headers == [("traceparent", b"00-abc"), ("x", "é".encode())]
    assert from_kafka_headers([*headers, ("bad", b"\xff"), ("none", None)]) == {
        "traceparent": "00-abc",
        "x": "é",
    }
    assert from_kafka_headers(None) == {}


def test_dlq_headers_name_the_error_attempts_and_original_topic():
    headers = dlq_headers(
        {"traceparent": "00-old", "custom": "kept"},
        error=ValueError("bad amount"),
        attempts=3,
        original_topic="order-events",
    )
    assert headers == {
        "traceparent": "00-old",
        "custom": "kept",
        ERROR_HEADER: "ValueError: bad amount",
        ATTEMPTS_HEADER: "3",
        ORIGINAL_TOPIC_HEADER: "order-events",
    }


def test_dlq_headers_replace_earlier_error_headers_and_the_trace_context():
    headers = dlq_headers(
        {ERROR_HEADER: "old", ATTEMPTS_HEADER: "9", "traceparent": "00-old", "tracestate": "a=1"},
        error="boom",
        attempts=1,
        original_topic="t",
        trace={"traceparent": "00-new"},
    )
    assert headers[ERROR_HEADER] == "boom"
    assert headers[ATTEMPTS_HEADER] == "1"
    assert headers["traceparent"] == "00-new"
    assert "tracestate" not in headers


def test_dlq_error_header_is_truncated():
    headers = dlq_headers({}, error="x" * 5000, attempts=1, original_topic="t")
    assert len(headers[ERROR_HEADER]) == MAX_ERROR_HEADER_CHARS


def test_dlq_topic_appends_dlq():
    assert dlq_topic("order-events") == "order-events.dlq"


def test_bootstrap_servers_are_read_from_the_environment():
    env = {"SHOPMESH_KAFKA_BOOTSTRAP": " 127.0.0.1:29092, kafka-2:29093 "}
    assert bootstrap_servers(env) == ["127.0.0.1:29092", "kafka-2:29093"]


@pytest.mark.parametrize("raw", ["", "localhost", "host:", ":9092", "h:port", "h:0", "a:1,,b:2"])
def test_bad_bootstrap_setting_is_a_config_error(raw):
    with pytest.raises(ConfigError, match="SHOPMESH_KAFKA_BOOTSTRAP"):
        bootstrap_servers({"SHOPMESH_KAFKA_BOOTSTRAP": raw})


def test_producer_waits_for_all_replicas_and_is_idempotent():
    assert PRODUCER_DEFAULTS["acks"] == "all"
    assert PRODUCER_DEFAULTS["enable_idempotence"] is True
