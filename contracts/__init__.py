"""The event contracts between the services: Kafka topics, event types, and one builder per event.

Producers build their events here and consumers compare against the same `EventType`s, so a
name or a payload field is spelled in one place. Every event is a CloudEvent
(contracts.cloudevents) keyed on Kafka by its aggregate id: the user id on user-events, the
order id on the other topics. mesh/kafka/topics.yaml is the list of topics the runtime
creates; a unit test keeps it and `Topic` in agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from contracts.cloudevents import cloud_event


class Topic(StrEnum):
    USER_EVENTS = "user-events"
    ORDER_EVENTS = "order-events"
    PAYMENT_EVENTS = "payment-events"
    PAYMENT_TASKS = "payment-tasks"


class EventType(StrEnum):
    # user-events, from users
    USER_CREATED = "shopmesh.user.created.v1"
    USER_BLOCKED = "shopmesh.user.blocked.v1"
    # order-events, from orders
    ORDER_STATUS_CHANGED = "shopmesh.order.status_changed.v1"
    # payment-tasks, from orders
    PAYMENT_REQUESTED = "shopmesh.payment.requested.v1"
    # payment-events, from payments
    PAYMENT_SUCCEEDED = "shopmesh.payment.succeeded.v1"
    PAYMENT_FAILED = "shopmesh.payment.failed.v1"
    PAYMENT_REFUNDED = "shopmesh.payment.refunded.v1"
    PAYMENT_REFUSED = "shopmesh.payment.refused.v1"


def user_created(*, user_id: str, name: str, roles: Sequence[str]) -> dict[str, Any]:
    return _user_event(
        EventType.USER_CREATED, user_id, {"userId": user_id, "name": name, "roles": list(roles)}
    )


def user_blocked(*, user_id: str, reason: str) -> dict[str, Any]:
    return _user_event(EventType.USER_BLOCKED, user_id, {"userId": user_id, "reason": reason})


def order_status_changed(
    *,
    order_id: str,
    user_id: str,
    status: str,
    total_price: int,
    currency: str,
    status_reason: str | None = None,
    payment_id: str | None = None,
) -> dict[str, Any]:
    """OrderStatusChanged. It carries the order's price: the payment workers cancel the payment
    of an order that ended unpaid, which may mean holding its order id before any charge."""
    data: dict[str, Any] = {
        "orderId": order_id,
        "userId": user_id,
        "status": status,
        "totalPrice": total_price,
        "currency": currency,
    }
    if status_reason:
        data["statusReason"] = status_reason
    if payment_id:
        data["paymentId"] = payment_id
    return _order_event("orders", EventType.ORDER_STATUS_CHANGED, order_id, data)


def payment_requested(*, order_id: str, user_id: str, amount: int, currency: str) -> dict[str, Any]:
    """PaymentRequested: the task a payment worker charges."""
    data = {"orderId": order_id, "userId": user_id, "amount": amount, "currency": currency}
    return _order_event("orders", EventType.PAYMENT_REQUESTED, order_id, data)


def payment_outcome(
    kind: EventType,
    *,
    order_id: str,
    payment_id: str,
    user_id: str,
    amount: int,
    currency: str,
    status: str,
    decline_reason: str | None = None,
) -> dict[str, Any]:
    """PaymentSucceeded, PaymentFailed (a declined payment) or PaymentRefunded, as `kind`."""
    data: dict[str, Any] = {
        "orderId": order_id,
        "paymentId": payment_id,
        "userId": user_id,
        "amount": amount,
        "currency": currency,
        "status": status,
    }
    if decline_reason:
        data["declineReason"] = decline_reason
    return _order_event("payments", kind, order_id, data)


def payment_refused(
    *, order_id: str, user_id: str, amount: int, currency: str, reason: str
) -> dict[str, Any]:
    """PaymentRefused: payments will not make the payment asked for; no payment was made."""
    data = {
        "orderId": order_id,
        "userId": user_id,
        "amount": amount,
        "currency": currency,
        "reason": reason,
    }
    return _order_event("payments", EventType.PAYMENT_REFUSED, order_id, data)


def _user_event(kind: EventType, user_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return cloud_event(source="users", type=kind.value, subject=f"user/{user_id}", data=data)


def _order_event(
    source: str, kind: EventType, order_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    return cloud_event(source=source, type=kind.value, subject=f"order/{order_id}", data=data)
