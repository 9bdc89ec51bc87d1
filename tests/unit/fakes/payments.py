"""The payments database in memory (leases on a clock the test moves, change notifications sent
on commit) and a payment provider that counts its charges and refunds."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from services.payments.domain import Outcome, Payment, PaymentStatus, provider_decision
from services.payments.notifier import PaymentNotifier
from tests.unit.fakes.database import (
    Autocommit,
    FakeOutbox,
    OutboxMessage,
    Transactions,
    round_trip,
)


class Clock:
    """The database's now(), in seconds; it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PaymentsTables:
    payments: dict[uuid.UUID, Payment] = field(default_factory=dict)
    # processing_until of the PENDING payments that are claimed
    leases: dict[uuid.UUID, float] = field(default_factory=dict)
    charged_by: dict[uuid.UUID, str | None] = field(default_factory=dict)
    blocked_users: set[str] = field(default_factory=set)
    outbox: list[OutboxMessage] = field(default_factory=list)
    # NOTIFYs of the transaction, sent when it commits
    notifications: list[Payment] = field(default_factory=list)


class InMemoryPayments:
    def __init__(self, tables: PaymentsTables, clock: Clock) -> None:
        self._tables = tables
        self._clock = clock

    async def insert_pending(self, payment: Payment, *, lease_s: float) -> Payment | None:
        await round_trip()
        if await self._for_order(payment.order_id) is not None:
            return None
        self._tables.payments[payment.id] = payment
        self._tables.leases[payment.id] = self._clock() + lease_s
        return payment

    async def insert_cancelled(self, payment: Payment) -> Payment | None:
        await round_trip()
        if await self._for_order(payment.order_id) is not None:
            return None
        self._tables.payments[payment.id] = payment
        return payment

    async def claim_stalled(self, payment_id: uuid.UUID, *, lease_s: float) -> Payment | None:
        await round_trip()
        payment = self._tables.payments.get(payment_id)
        lease = self._tables.leases.get(payment_id)
        if payment is None or payment.status.final or lease is None or lease >= self._clock():
            return None
        self._tables.leases[payment_id] = self._clock() + lease_s
        return payment

    async def finish(
        self, payment_id: uuid.UUID, outcome: Outcome, *, charged_by: str | None = None
    ) -> Payment | None:
        await round_trip()
        payment = self._tables.payments.get(payment_id)
        if payment is None or payment.status.final:
            return None
        finished = replace(
            payment,
            status=outcome.status,
            decline_reason=outcome.decline_reason,
            updated_at=datetime.now(UTC),
        )
        self._tables.payments[payment_id] = finished
        self._tables.leases.pop(payment_id, None)
        self._tables.charged_by[payment_id] = charged_by
        return finished

    async def mark_refunded(self, payment_id: uuid.UUID) -> Payment | None:
        await round_trip()
        payment = self._tables.payments.get(payment_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED:
            return None
        refunded = replace(payment, status=PaymentStatus.REFUNDED, updated_at=datetime.now(UTC))
        self._tables.payments[payment_id] = refunded
        return refunded

    async def is_blocked(self, user_id: str) -> bool:
        await round_trip()
        return user_id in self._tables.blocked_users

    async def block_user(self, user_id: str) -> None:
        await round_trip()
        self._tables.blocked_users.add(user_id)

    async def get(self, payment_id: uuid.UUID) -> Payment | None:
        await round_trip()
        return self._tables.payments.get(payment_id)

    async def get_for_order(self, order_id: str) -> Payment | None:
        await round_trip()
        return await self._for_order(order_id)

    async def list_for_user(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Payment]:
        await round_trip()
        mine = sorted(
            (p for p in self._tables.payments.values() if p.user_id == user_id),
            key=lambda p: (p.created_at, p.id),
        )
        if after is not None:
            mine = [p for p in mine if (p.created_at, p.id) > after]
        return mine[:limit]

    async def _for_order(self, order_id: str) -> Payment | None:
        return next((p for p in self._tables.payments.values() if p.order_id == order_id), None)


class InMemoryPaymentsUnitOfWork:
    def __init__(self, tables: PaymentsTables, clock: Clock) -> None:
        self._tables = tables
        self.payments = InMemoryPayments(tables, clock)
        self.outbox = FakeOutbox(tables.outbox)

    async def notify_changed(self, payment: Payment) -> None:
        await round_trip()
        self._tables.notifications.append(payment)


class InMemoryPaymentsDatabase:
    """Committed changes reach every notifier in `listeners`, as Postgres NOTIFY reaches each
    process's LISTEN connection."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.tables = PaymentsTables()
        self.listeners: list[PaymentNotifier] = []
        self.transactions = Transactions(
            self.tables,
            lambda tables: InMemoryPaymentsUnitOfWork(tables, self.clock),
            after_commit=self._send_notifications,
        )
        self.payments = Autocommit(self.transactions, lambda uow: uow.payments)

    def transaction(self) -> AbstractAsyncContextManager[InMemoryPaymentsUnitOfWork]:
        return self.transactions.transaction()

    def outbox(self, topic: str) -> list[OutboxMessage]:
        return [message for message in self.tables.outbox if message.topic == topic]

    def for_order(self, order_id: str) -> Payment:
        (payment,) = (p for p in self.tables.payments.values() if p.order_id == order_id)
        return payment

    def _send_notifications(self, tables: PaymentsTables) -> None:
        sent, tables.notifications = tables.notifications, []
        for payment in sent:
            for notifier in self.listeners:
                notifier.deliver(payment)


class FakeProvider:
    """The simulated provider's decisions, with every charge and refund counted by order id;
    while held, charges wait until released (`charging` is set once one waits)."""

    def __init__(self) -> None:
        self.charges: Counter[str] = Counter()
        self.refunds: Counter[str] = Counter()
        self._open = asyncio.Event()
        self._open.set()
        self.charging = asyncio.Event()

    async def charge(self, payment: Payment) -> Outcome:
        self.charges[payment.order_id] += 1
        await round_trip()
        self.charging.set()
        await self._open.wait()
        return provider_decision(payment.amount)

    async def refund(self, payment: Payment) -> None:
        self.refunds[payment.order_id] += 1
        await round_trip()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()
