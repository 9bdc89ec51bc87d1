import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.orders.domain import (
    CURRENCY,
    OrderItem,
    OrderStatus,
    new_order,
    total_price,
)


def test_price_is_one_hundred_minor_units_per_unit_of_quantity():
    assert total_price([OrderItem("p1", 1)]) == 100
    assert total_price([OrderItem("p1", 3)]) == 300


def test_price_sums_over_all_items():
    items = [OrderItem("p1", 2), OrderItem("p2", 1), OrderItem("p1", 7)]
    assert total_price(items) == 1000


def test_largest_allowed_order_is_priced_exactly():
    assert total_price([OrderItem(f"p{i}", 1000) for i in range(100)]) == 10_000_000


def test_new_order_is_pending_in_rubles_with_its_price():
    order = new_order("alice", [OrderItem("p1", 2), OrderItem("p2", 1)])
    assert order.status is OrderStatus.PENDING
    assert order.currency == CURRENCY == "RUB"
    assert order.total_price == 300
    assert order.user_id == "alice"
    assert isinstance(order.id, uuid.UUID)
    assert order.created_at.tzinfo is not None


def test_new_orders_get_distinct_ids():
    assert new_order("a", [OrderItem("p", 1)]).id != new_order("a", [OrderItem("p", 1)]).id


def test_new_order_needs_a_user_and_at_least_one_item():
    with pytest.raises(ValueError):
        new_order("", [OrderItem("p", 1)])
    with pytest.raises(ValueError):
        new_order("alice", [])


@pytest.mark.parametrize("quantity", [0, -1, 1.5, 1.0, True, "2"])
def test_quantity_must_be_a_positive_integer(quantity):
    with pytest.raises(ValueError):
        OrderItem("p1", quantity)


def test_order_json_uses_api_field_names_and_utc_millisecond_timestamps():
    created = datetime(2026, 11, 29, 13, 15, 0, 123456, tzinfo=timezone(timedelta(hours=3)))
    order_id = uuid.UUID("8f14e45f-ceea-467f-a8f0-0123456789ab")
    order = new_order("alice", [OrderItem("p1", 2)], order_id=order_id, now=created)
    assert order.to_json() == {
        "id": "8f14e45f-ceea-467f-a8f0-0123456789ab",
        "userId": "alice",
        "status": "PENDING",
        "items": [{"productId": "p1", "quantity": 2}],
        "totalPrice": 200,
        "currency": "RUB",
        "createdAt": "2026-11-29T10:15:00.123Z",
        "paymentId": None,
        "statusReason": None,
    }
    assert order.created_at.astimezone(UTC).hour == 10


def test_every_status_the_lifecycle_needs_exists():
    assert {s.value for s in OrderStatus} == {
        "PENDING",
        "PAID",
        "PAYMENT_PENDING",
        "FAILED",
        "CANCELLED",
    }
