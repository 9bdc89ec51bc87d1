import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.notifications.domain import (
    InvalidEventError,
    event_errors,
    hello,
    notification_from_event,
)

NOW = datetime(2026, 11, 29, 10, 15, 0, 123456, tzinfo=UTC)
EVENT_ID = "0b1e6c0e-6f3a-4d9e-9a53-2f0c1d7a8b11"


def order_event(**changes):
    event = {
        "specversion": "1.0",
        "id": EVENT_ID,
        "source": "shopmesh/orders",
        "type": "shopmesh.order.status_changed.v1",
        "subject": "order/8f14e45f",
        "time": "2026-11-29T10:15:00.123Z",
        "datacontenttype": "application/json",
        "data": {"orderId": "8f14e45f", "userId": "alice", "status": "PAID"},
    }
    event.update(changes)
    return {key: value for key, value in event.items() if value is not ...}


def fields(errors):
    return {error["field"]: error["message"] for error in errors}


def test_a_valid_order_event_becomes_the_users_notification():
    notification = notification_from_event(order_event(), now=NOW)
    assert notification.to_json() == {
        "id": EVENT_ID,
        "type": "shopmesh.order.status_changed.v1",
        "subject": "order/8f14e45f",
        "userId": "alice",
        "data": {"orderId": "8f14e45f", "userId": "alice", "status": "PAID"},
        "createdAt": "2026-11-29T10:15:00.123Z",
    }
    assert notification.id == uuid.UUID(EVENT_ID)


def test_a_payment_event_with_only_required_attributes_is_valid():
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "shopmesh/payments",
        "type": "shopmesh.payment.status_changed.v1",
        "data": {"paymentId": "p-1", "orderId": "o-1", "userId": "bob", "status": "SUCCEEDED"},
    }
    notification = notification_from_event(event, now=NOW)
    assert notification.user_id == "bob"
    assert notification.subject is None


def test_created_at_is_rendered_in_utc():
    moscow = timezone(timedelta(hours=3))
    notification = notification_from_event(order_event(), now=NOW.astimezone(moscow))
    assert notification.to_json()["createdAt"] == "2026-11-29T10:15:00.123Z"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"specversion": ...}, "specversion", "is required"),
        ({"specversion": "0.3"}, "specversion", 'must be "1.0"'),
        ({"specversion": 1.0}, "specversion", 'must be "1.0"'),
        ({"id": ...}, "id", "is required"),
        ({"id": "not-a-uuid"}, "id", "must be a UUID"),
        ({"id": 7}, "id", "must be a string, got number"),
        ({"source": ...}, "source", "is required"),
        ({"source": "  "}, "source", "must not be empty"),
        ({"type": ...}, "type", "is required"),
        ({"type": "x" * 257}, "type", "must be at most 256 characters long"),
        ({"subject": 5}, "subject", "must be a string, got number"),
        ({"time": "yesterday"}, "time", "must be an RFC 3339 timestamp"),
        (
            {"time": "2026-11-29T10:15:00"},
            "time",
            "must be an RFC 3339 timestamp with a UTC offset",
        ),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "must be application/json"),
        ({"data": ...}, "data", "is required"),
        ({"data": ..., "data_base64": "e30="}, "data", "must be a JSON object, not data_base64"),
        ({"data": ["alice"]}, "data", "must be an object, got array"),
        ({"data": {"orderId": "o-1"}}, "data.userId", "is required"),
        ({"data": {"userId": ""}}, "data.userId", "must not be empty"),
        ({"data": {"userId": 42}}, "data.userId", "must be a string, got number"),
        ({"data": {"userId": "al\x00ice"}}, "data.userId", "must not contain control characters"),
    ],
)
def test_an_invalid_envelope_names_the_field(changes, field, message):
    errors = fields(event_errors(order_event(**changes)))
    assert errors[field].startswith(message)
    with pytest.raises(InvalidEventError) as raised:
        notification_from_event(order_event(**changes), now=NOW)
    assert raised.value.errors == event_errors(order_event(**changes))


def test_every_broken_attribute_is_reported_at_once():
    event = {"specversion": "2.0", "id": "x", "data": {}}
    assert list(fields(event_errors(event))) == [
        "specversion",
        "id",
        "source",
        "type",
        "data.userId",
    ]
    assert str(InvalidEventError(event_errors(event))) == (
        'specversion must be "1.0" (and 4 more errors)'
    )


@pytest.mark.parametrize("body", [[], "event", None, 3])
def test_an_event_that_is_not_an_object_is_invalid(body):
    assert event_errors(body) == [{"field": "body", "message": "must be a JSON object"}]


def test_optional_attributes_may_be_null():
    assert event_errors(order_event(subject=None, time=None, datacontenttype=None)) == []


def test_cloudevents_json_content_type_is_accepted():
    event = order_event(datacontenttype="application/cloudevents+json; charset=utf-8")
    assert event_errors(event) == []


def test_hello_names_the_user():
    assert hello("alice") == {"type": "hello", "userId": "alice"}
