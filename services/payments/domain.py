"""Payments: the model, the request rules and the simulated provider. Plain Python, no I/O.

The simulated provider is deterministic, so tests and demos can choose an outcome:

- every charge takes PROCESSING_TIME_S (100 ms), so the PENDING status is observable;
- an amount above SINGLE_PAYMENT_LIMIT (1 000 000 minor units, i.e. 10 000.00 RUB) is
  DECLINED with the reason "amount exceeds the single-payment limit";
- every other payment SUCCEEDED;
- a refund takes PROCESSING_TIME_S too and always goes through.

A charge may run more than once for one payment (a caller that takes over a payment whose
processing stalled): the simulation has no side effects, and a real provider would be given
the payment id as its idempotency key. So may a refund, for the same reason.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.common import fields
from services.common.errors import InvalidArgument

CURRENCIES = ("RUB",)
MAX_AMOUNT = 10**12
MAX_KEY_LENGTH = 64
SINGLE_PAYMENT_LIMIT = 1_000_000
PROCESSING_TIME_S = 0.1
DECLINED_OVER_LIMIT = "amount exceeds the single-payment limit"


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"
    # The order ended unpaid before anything charged it: this payment holds the order id (the
    # idempotency key), so nothing can charge the order any more.
    CANCELLED = "CANCELLED"
    # Charged, then given back because the order ended unpaid (cancelled, or failed).
    REFUNDED = "REFUNDED"

    @property
    def final(self) -> bool:
        return self is not PaymentStatus.PENDING


@dataclass(frozen=True)
class PaymentRequest:
    """A validated ProcessPayment request."""

    order_id: str
    user_id: str
    amount: int
    currency: str

    def conflicts(self, payment: Payment) -> list[str]:
        """The fields in which `payment` (the order's existing payment) differs from this."""
        return [
            name
            for name, mine, theirs in (
                ("user_id", self.user_id, payment.user_id),
                ("amount", self.amount, payment.amount),
                ("currency", self.currency, payment.currency),
            )
            if mine != theirs
        ]


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    order_id: str
    user_id: str
    amount: int
    currency: str
    status: PaymentStatus
    decline_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Outcome:
    """The provider's answer: SUCCEEDED, or DECLINED with a reason."""

    status: PaymentStatus
    decline_reason: str | None = None


def payment_request(order_id: str, user_id: str, amount: int, currency: str) -> PaymentRequest:
    """Validate a ProcessPayment request; InvalidArgument names the first bad field."""
    return PaymentRequest(
        order_id=valid_key("order_id", order_id),
        user_id=valid_key("user_id", user_id),
        amount=valid_amount(amount),
        currency=valid_currency(currency),
    )


def valid_key(field: str, value: str) -> str:
    """An order or user id: 1..64 characters, no control characters."""
    return fields.text(field, value, max_length=MAX_KEY_LENGTH)


def valid_amount(amount: int) -> int:
    if amount <= 0:
        raise InvalidArgument("amount", "must be a positive number of minor units")
    if amount > MAX_AMOUNT:
        raise InvalidArgument("amount", f"must be at most {MAX_AMOUNT} minor units")
    return amount


def valid_currency(currency: str) -> str:
    if currency not in CURRENCIES:
        raise InvalidArgument("currency", f"must be one of {', '.join(CURRENCIES)}")
    return currency


def valid_payment_id(value: str, *, field: str = "payment_id") -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None


def new_payment(
    request: PaymentRequest, *, payment_id: uuid.UUID | None = None, now: datetime | None = None
) -> Payment:
    """The PENDING payment a request creates."""
    created = now or datetime.now(UTC)
    return Payment(
        id=payment_id or uuid.uuid4(),
        order_id=request.order_id,
        user_id=request.user_id,
        amount=request.amount,
        currency=request.currency,
        status=PaymentStatus.PENDING,
        decline_reason=None,
        created_at=created,
        updated_at=created,
    )


def cancelled_payment(request: PaymentRequest) -> Payment:
    """The CANCELLED payment that takes an order's idempotency key before any charge."""
    return replace(new_payment(request), status=PaymentStatus.CANCELLED)


def provider_decision(amount: int) -> Outcome:
    """The simulated provider's rule for a payment of `amount` minor units."""
    if amount > SINGLE_PAYMENT_LIMIT:
        return Outcome(PaymentStatus.DECLINED, DECLINED_OVER_LIMIT)
    return Outcome(PaymentStatus.SUCCEEDED)


async def charge(
    payment: Payment, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
) -> Outcome:
    """Ask the simulated provider to charge `payment`: PROCESSING_TIME_S, then its decision."""
    await sleep(PROCESSING_TIME_S)
    return provider_decision(payment.amount)


async def refund(
    payment: Payment, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
) -> None:
    """Ask the simulated provider to give a charged `payment` back: PROCESSING_TIME_S."""
    await sleep(PROCESSING_TIME_S)


class SimulatedProvider:
    """The simulated provider, as the service layer calls it."""

    async def charge(self, payment: Payment) -> Outcome:
        return await charge(payment)

    async def refund(self, payment: Payment) -> None:
        await refund(payment)
