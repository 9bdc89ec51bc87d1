import pytest

from contracts import EventType
from services.common.messaging.envelope import validate
from services.orders.api import prefers_respond_async
from services.orders.domain import OrderItem, OrderStatus, new_order
from services.orders.service import payment_requested_event, status_changed_event
from services.users.domain import new_user
from services.users.service import user_event


@pytest.mark.parametrize(
    "values, wanted",
    [
        (["respond-async"], True),
        (["Respond-Async"], True),
        (["return=minimal, respond-async, wait=10"], True),
        (["wait=10", "respond-async"], True),
        (["return=representation"], False),
        ([], False),
        (["respond-asynchronously"], False),
    ],
)
def test_prefer_respond_async_is_recognised(values, wanted):
    assert prefers_respond_async(values) is wanted


def test_payment_requested_carries_order_user_amount_currency():
    order = new_order("alice", [OrderItem("p", 3)])
    event = payment_requested_event(order)
    validate(event)
    assert event["type"] == "shopmesh.payment.requested.v1"
    assert event["data"] == {
        "orderId": str(order.id),
        "userId": "alice",
        "amount": 300,
        "currency": "RUB",
    }


def test_status_changed_names_the_status_and_reason():
    order = new_order("alice", [OrderItem("p", 1)]).moved_to(
        OrderStatus.PAYMENT_PENDING, reason="payment queued"
    )
    event = status_changed_event(order)
    assert event["data"]["status"] == "PAYMENT_PENDING"
    assert event["data"]["statusReason"] == "payment queued"


def test_user_events_are_keyed_by_user_and_typed():
    user = new_user("Eve", "eve@example.org")
    created = user_event("created", user)
    validate(created)
    assert created["type"] == EventType.USER_CREATED and created["data"]["userId"] == user.id
    assert user_event("blocked", user)["type"] == EventType.USER_BLOCKED
