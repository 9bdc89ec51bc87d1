"""Orders: the model and its rules. Plain Python, no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

CURRENCY = "RUB"
UNIT_PRICE_MINOR = 100  # the brief's rule: every unit of every product costs 100 minor units


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    PAYMENT_PENDING = "PAYMENT_PENDING"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# Where each status may go next. PAID, FAILED and CANCELLED are final.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.PAYMENT_PENDING, OrderStatus.CANCELLED}
    ),
    OrderStatus.PAYMENT_PENDING: frozenset(
        {OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.PAID: frozenset(),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, current: OrderStatus, wanted: OrderStatus) -> None:
        super().__init__(f"an order that is {current.value} cannot become {wanted.value}")
        self.current = current
        self.wanted = wanted


def sources_of(status: OrderStatus) -> list[OrderStatus]:
    """The statuses an order may be in to move to `status`."""
    return [current for current, nexts in TRANSITIONS.items() if status in nexts]


@dataclass(frozen=True)
class OrderItem:
    product_id: str
    quantity: int

    def __post_init__(self) -> None:
        if not self.product_id:
            raise ValueError("product_id must not be empty")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            raise ValueError("quantity must be an integer")
        if self.quantity < 1:
            raise ValueError("quantity must be positive")

    def to_json(self) -> dict[str, Any]:
        return {"productId": self.product_id, "quantity": self.quantity}


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    user_id: str
    status: OrderStatus
    items: tuple[OrderItem, ...]
    total_price: int
    currency: str
    created_at: datetime
    payment_id: str | None = None
    status_reason: str | None = None

    def moved_to(
        self, status: OrderStatus, *, payment_id: str | None = None, reason: str | None = None
    ) -> Order:
        """The order after a status change; InvalidTransition if the rules forbid it."""
        if status not in TRANSITIONS[self.status]:
            raise InvalidTransition(self.status, status)
        return replace(
            self, status=status, payment_id=payment_id or self.payment_id, status_reason=reason
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "userId": self.user_id,
            "status": self.status.value,
            "items": [item.to_json() for item in self.items],
            "totalPrice": self.total_price,
            "currency": self.currency,
            "createdAt": self.created_at.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "paymentId": self.payment_id,
            "statusReason": self.status_reason,
        }


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an Idempotency-Key was first used for: the request's fingerprint and its order."""

    request_hash: str
    order_id: uuid.UUID


def total_price(items: Iterable[OrderItem]) -> int:
    """The order's price in minor units: quantity times the unit price, summed over the items."""
    return sum(item.quantity * UNIT_PRICE_MINOR for item in items)


def new_order(
    user_id: str,
    items: Iterable[OrderItem],
    *,
    order_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> Order:
    """A freshly placed order: PENDING, priced, stamped with the current UTC time."""
    lines = tuple(items)
    if not user_id:
        raise ValueError("user_id must not be empty")
    if not lines:
        raise ValueError("an order needs at least one item")
    return Order(
        id=order_id or uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        items=lines,
        total_price=total_price(lines),
        currency=CURRENCY,
        created_at=now or datetime.now(UTC),
    )
