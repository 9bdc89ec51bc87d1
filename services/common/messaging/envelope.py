"""CloudEvents 1.0 structured JSON on Kafka: value, key and headers.

The format: docs/messaging.md, "The message". Build events with the builders of
`contracts`; this module turns them into Kafka message parts and back, and
builds the headers: W3C trace context (`traceparent`, `tracestate`) and, on dead-lettered
messages, `shopmesh-error`, `shopmesh-attempts`, `shopmesh-original-topic`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context

from contracts.cloudevents import SPECVERSION

TRACE_HEADERS = ("traceparent", "tracestate")
ERROR_HEADER = "shopmesh-error"
ATTEMPTS_HEADER = "shopmesh-attempts"
ORIGINAL_TOPIC_HEADER = "shopmesh-original-topic"
DLQ_SUFFIX = ".dlq"
MAX_ERROR_HEADER_CHARS = 1000

# Kafka headers as aiokafka takes and returns them.
KafkaHeaders = list[tuple[str, bytes]]


class MalformedEventError(ValueError):
    """A message value is not a CloudEvents 1.0 structured JSON event this project can handle."""


@dataclass(frozen=True)
class Event:
    """A parsed CloudEvent; `attributes` holds the whole envelope as received."""

    id: uuid.UUID
    source: str
    type: str
    data: dict[str, Any]
    subject: str | None = None
    time: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def validate(event: Mapping[str, Any]) -> Event:
    """Check the envelope attributes this project relies on; return the parsed event.

    Raises MalformedEventError naming the first problem.
    """
    if not isinstance(event, Mapping):
        raise MalformedEventError(f"an event is a JSON object, got {type(event).__name__}")
    if event.get("specversion") != SPECVERSION:
        raise MalformedEventError(
            f"specversion must be {SPECVERSION!r}, got {event.get('specversion')!r}"
        )
    for name in ("id", "source", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise MalformedEventError(f"{name} must be a non-empty string, got {value!r}")
    try:
        event_id = uuid.UUID(event["id"])
    except ValueError:
        raise MalformedEventError(f"id must be a UUID, got {event['id']!r}") from None
    content_type = event.get("datacontenttype", "application/json")
    if content_type != "application/json":
        raise MalformedEventError(f"datacontenttype must be application/json, got {content_type!r}")
    if "data" not in event:
        raise MalformedEventError("data is missing")
    data = event["data"]
    if not isinstance(data, dict):
        raise MalformedEventError(f"data must be a JSON object, got {type(data).__name__}")
    for name in ("subject", "time"):
        if name in event and not isinstance(event[name], str):
            raise MalformedEventError(f"{name} must be a string, got {event[name]!r}")
    return Event(
        id=event_id,
        source=event["source"],
        type=event["type"],
        data=data,
        subject=event.get("subject"),
        time=event.get("time"),
        attributes=dict(event),
    )


def serialize(event: Mapping[str, Any]) -> bytes:
    """The Kafka message value of `event` (validated first)."""
    validate(event)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def parse(value: bytes | None) -> Event:
    """The event in a Kafka message value; MalformedEventError if it is not a valid one."""
    if value is None:
        raise MalformedEventError("message has no value (tombstone)")
    try:
        decoded = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEventError(f"value is not JSON: {exc}") from None
    return validate(decoded)


def message_key(aggregate_id: str | uuid.UUID) -> bytes:
    """The Kafka key of an aggregate: its id as UTF-8 (one aggregate, one partition)."""
    key = str(aggregate_id)
    if not key:
        raise ValueError("the Kafka key (aggregate id) must not be empty")
    return key.encode()


def current_trace_headers(context: Context | None = None) -> dict[str, str]:
    """`traceparent`/`tracestate` for the current (or given) OpenTelemetry context.

    Empty when there is no recording span or no propagator is configured.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return {name: carrier[name] for name in TRACE_HEADERS if name in carrier}


def to_kafka_headers(headers: Mapping[str, str]) -> KafkaHeaders:
    return [(name, value.encode()) for name, value in headers.items()]


def from_kafka_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a dict (last value wins; undecodable values are dropped)."""
    result: dict[str, str] = {}
    for name, value in headers or ():
        if value is None:
            continue
        try:
            result[name] = value.decode()
        except UnicodeDecodeError:
            continue
    return result


def extract_context(headers: Mapping[str, str]) -> Context:
    """The producer's trace context carried in `headers` (an empty context if there is none)."""
    return propagate.extract({k: v for k, v in headers.items() if k in TRACE_HEADERS})


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def describe_error(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    if len(text) > MAX_ERROR_HEADER_CHARS:
        text = text[: MAX_ERROR_HEADER_CHARS - 1] + "…"
    return text


def dlq_headers(
    original: Mapping[str, str],
    *,
    error: BaseException | str,
    attempts: int,
    original_topic: str,
    trace: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of a dead-lettered copy of a message.

    The original headers are kept, earlier error headers replaced, and the trace context set to
    `trace` when given (the consumer span that gave up: same trace, one level deeper).
    """
    headers = {
        name: value
        for name, value in original.items()
        if name not in (ERROR_HEADER, ATTEMPTS_HEADER, ORIGINAL_TOPIC_HEADER)
    }
    if trace:
        for name in TRACE_HEADERS:
            headers.pop(name, None)
        headers.update(trace)
    headers[ERROR_HEADER] = describe_error(error)
    headers[ATTEMPTS_HEADER] = str(attempts)
    headers[ORIGINAL_TOPIC_HEADER] = original_topic
    return headers
