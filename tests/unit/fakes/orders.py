"""The orders database in memory, and fakes of the users and payments clients orders calls."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

import grpc

from services.orders.clients import (
    PaymentOutcome,
    PaymentResult,
    UnknownUser,
    UpstreamUnavailable,
    UserInfo,
    payment_error,
)
from services.orders.domain import IdempotencyRecord, Order, OrderStatus
from tests.unit.fakes.database import (
    Autocommit,
    FakeOutbox,
    OutboxMessage,
    Transactions,
    round_trip,
)


@dataclass
class OrdersTables:
    orders: dict[uuid.UUID, Order] = field(default_factory=dict)
    idempotency_keys: dict[str, IdempotencyRecord] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)


class InMemoryOrders:
    def __init__(self, tables: OrdersTables) -> None:
        self._tables = tables

    async def add(self, order: Order) -> None:
        await round_trip()
        if order.id in self._tables.orders:
            raise ValueError(f"duplicate order id {order.id}")
        self._tables.orders[order.id] = order

    async def get(self, order_id: uuid.UUID) -> Order | None:
        await round_trip()
        return self._tables.orders.get(order_id)

    async def list_for_user(self, user_id: str) -> list[Order]:
        await round_trip()
        mine = [order for order in self._tables.orders.values() if order.user_id == user_id]
        return sorted(mine, key=lambda order: (order.created_at, order.id))

    async def update_status(self, order: Order, expected: list[OrderStatus]) -> Order | None:
        await round_trip()
        stored = self._tables.orders.get(order.id)
        if stored is None or stored.status not in expected:
            return None
        updated = replace(
            stored,
            status=order.status,
            payment_id=order.payment_id,
            status_reason=order.status_reason,
        )
        self._tables.orders[order.id] = updated
        return updated

    async def claim_idempotency_key(self, key: str, request_hash: str, order_id: uuid.UUID) -> bool:
        await round_trip()
        if key in self._tables.idempotency_keys:
            return False
        self._tables.idempotency_keys[key] = IdempotencyRecord(request_hash, order_id)
        return True

    async def find_idempotency_key(self, key: str) -> IdempotencyRecord | None:
        await round_trip()
        return self._tables.idempotency_keys.get(key)


class InMemoryOrdersUnitOfWork:
    def __init__(self, tables: OrdersTables) -> None:
        self.orders = InMemoryOrders(tables)
        self.outbox = FakeOutbox(tables.outbox)


class InMemoryOrdersDatabase:
    def __init__(self) -> None:
        self.tables = OrdersTables()
        self.transactions = Transactions(self.tables, InMemoryOrdersUnitOfWork)
        self.orders = Autocommit(self.transactions, lambda uow: uow.orders)

    def transaction(self) -> AbstractAsyncContextManager[InMemoryOrdersUnitOfWork]:
        return self.transactions.transaction()

    def outbox(self, topic: str) -> list[OutboxMessage]:
        return [message for message in self.tables.outbox if message.topic == topic]

    def stored(self, order_id: uuid.UUID) -> Order:
        return self.tables.orders[order_id]


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeUsersClient:
    """users.GetUser: every user exists and is active unless named otherwise."""

    def __init__(self, *, blocked: set[str] | None = None, unknown: set[str] | None = None) -> None:
        self.blocked = blocked or set()
        self.unknown = unknown or set()
        self.down: grpc.StatusCode | None = None
        self.calls: list[str] = []

    async def get_user(self, user_id: str) -> UserInfo:
        await round_trip()
        self.calls.append(user_id)
        if self.down is not None:
            raise UpstreamUnavailable("users", rpc_error(self.down, "users down"))
        if user_id in self.unknown:
            raise UnknownUser(user_id)
        return UserInfo(id=user_id, blocked=user_id in self.blocked)


@dataclass(frozen=True)
class PaymentCall:
    order_id: uuid.UUID
    user_id: str
    amount: int
    currency: str


# What payments answers a call: an outcome, an error to raise, or a step to run first (a
# concurrent cancel, say) that then answers.
Answer = PaymentOutcome | Exception | Callable[[PaymentCall], Awaitable[PaymentOutcome]]


def succeeded(payment_id: str = "pay-1") -> PaymentOutcome:
    return PaymentOutcome(payment_id, PaymentResult.SUCCEEDED, "")


def declined(reason: str, payment_id: str = "pay-1") -> PaymentOutcome:
    return PaymentOutcome(payment_id, PaymentResult.DECLINED, reason)


def still_pending(payment_id: str = "pay-1") -> PaymentOutcome:
    return PaymentOutcome(payment_id, PaymentResult.PENDING, "")


def unavailable(code: grpc.StatusCode) -> UpstreamUnavailable:
    """What the payments client raises when its deadline, retries or the circuit gave up."""
    return UpstreamUnavailable("payments", rpc_error(code, "payments unavailable"))


def payments_error(code: grpc.StatusCode, details: str = "") -> Exception:
    """What the payments client raises for a ProcessPayment that ended with `code`."""
    return payment_error(rpc_error(code, details))


class FakePaymentsClient:
    """payments.ProcessPayment: the answers in order, the last one for every later call."""

    def __init__(self, *answers: Answer) -> None:
        self._answers = list(answers) or [succeeded()]
        self.calls: list[PaymentCall] = []

    async def process_payment(
        self, order_id: uuid.UUID, user_id: str, amount: int, currency: str
    ) -> PaymentOutcome:
        await round_trip()
        call = PaymentCall(order_id, user_id, amount, currency)
        self.calls.append(call)
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, PaymentOutcome):
            return answer
        return await answer(call)
