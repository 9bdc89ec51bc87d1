"""An order and its payment across orders and payments, on their in-memory fakes joined the way
the mesh joins them: orders' synchronous ProcessPayment reaches the payments service layer (its
errors mapped to the status codes gRPC carries and back through orders' client), the payment
tasks in orders' outbox reach a payment worker and the events in payments' outbox reach orders'
consumer, each stream in the order it was written, when the test delivers it. So a race between
the two services is a sequence of steps the test chooses."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from services.common.errors import DomainError
from services.common.messaging.envelope import validate
from services.common.rpc import status_for
from services.orders.clients import PaymentOutcome, payment_error, payment_outcome
from services.orders.domain import Order, OrderItem, OrderStatus
from services.orders.service import PAYMENT_TASKS, OrderService, on_event
from services.payments import api
from services.payments.domain import Payment, PaymentStatus
from services.payments.notifier import PaymentNotifier
from services.payments.service import PAYMENT_EVENTS, PaymentService
from services.payments.worker import PaymentTasks
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.orders import FakeUsersClient, InMemoryOrdersDatabase, rpc_error
from tests.unit.fakes.payments import FakeProvider, InMemoryPaymentsDatabase

ITEMS = [OrderItem("book", 3)]

Step = Callable[[], Awaitable[None]]


class ProcessDied(BaseException):
    """The orders process stopping (SIGKILL, a crash) while it waits for payments."""


class PaymentsOverGrpc:
    """orders' payments client in front of the payments service layer. `before` runs when the
    call reaches payments, `after` once payments has answered and before orders hears it."""

    def __init__(self, service: PaymentService) -> None:
        self._service = service
        self.before: Step | None = None
        self.after: Step | None = None

    async def process_payment(
        self, order_id: uuid.UUID, user_id: str, amount: int, currency: str
    ) -> PaymentOutcome:
        if self.before is not None:
            await self.before()
        try:
            payment = await self._service.process_payment(str(order_id), user_id, amount, currency)
        except DomainError as exc:
            code, message = status_for(exc)
            raise payment_error(rpc_error(code, message)) from exc
        if self.after is not None:
            await self.after()
        return payment_outcome(api.to_proto(payment))


class Shop:
    """orders-1, payments-1 and payments-worker-1 over their two databases."""

    def __init__(self) -> None:
        self.payments_db = InMemoryPaymentsDatabase()
        self.provider = FakeProvider()
        self.payments = self._payments_process("payments-1")
        self.worker = PaymentTasks(self._payments_process("payments-worker-1"))
        self.grpc = PaymentsOverGrpc(self.payments)
        self.orders_db = InMemoryOrdersDatabase()
        self.orders = OrderService(self.orders_db, FakeUsersClient(), self.grpc)
        self._tasks_delivered = 0
        self._events_delivered = 0

    def _payments_process(self, instance: str) -> PaymentService:
        notifier = PaymentNotifier("postgresql://unused")
        self.payments_db.listeners.append(notifier)
        return PaymentService(self.payments_db, notifier, instance=instance, provider=self.provider)

    async def place(self, *, respond_async: bool = False) -> Order:
        return (await self.orders.place_order("alice", ITEMS, respond_async=respond_async)).order

    async def run_worker(self) -> None:
        """The worker handles every payment task orders has published so far, in order."""
        tasks = self.orders_db.outbox(PAYMENT_TASKS)[self._tasks_delivered :]
        self._tasks_delivered += len(tasks)
        for task in tasks:
            await self.worker(None, validate(task.event))

    async def deliver_payment_events(self) -> None:
        """orders' consumer handles every payment event published so far, in order."""
        events = self.payments_db.outbox(PAYMENT_EVENTS)[self._events_delivered :]
        self._events_delivered += len(events)
        for message in events:
            async with self.orders_db.transaction() as uow:
                await on_event(uow, validate(message.event))

    async def settle(self) -> None:
        """Kafka catches up: tasks and events flow until neither side has anything new."""
        while self._tasks_delivered < len(self.orders_db.outbox(PAYMENT_TASKS)) or (
            self._events_delivered < len(self.payments_db.outbox(PAYMENT_EVENTS))
        ):
            await self.run_worker()
            await self.deliver_payment_events()

    def order(self, order_id: uuid.UUID) -> Order:
        return self.orders_db.stored(order_id)

    def payment(self, order_id: uuid.UUID) -> Payment:
        return self.payments_db.for_order(str(order_id))

    def charges(self, order_id: uuid.UUID) -> tuple[int, int]:
        """How often the provider charged the order, and refunded it."""
        key = str(order_id)
        return self.provider.charges[key], self.provider.refunds[key]


# --- an accepted order always ends -----------------------------------------------------------


@in_a_loop
async def test_an_order_paid_at_once_is_charged_once_though_its_task_is_queued_too():
    shop = Shop()
    order = await shop.place()
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.PAID
    assert shop.payment(order.id).status == PaymentStatus.SUCCEEDED
    assert shop.charges(order.id) == (1, 0)


@in_a_loop
async def test_an_order_left_pending_when_orders_dies_mid_payment_is_paid_once_by_the_worker():
    async def die() -> None:
        raise ProcessDied

    shop = Shop()
    shop.grpc.before = die
    with pytest.raises(ProcessDied):
        await shop.place()
    (order,) = shop.orders_db.tables.orders.values()
    assert order.status == OrderStatus.PENDING
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.PAID
    assert shop.order(order.id).payment_id == str(shop.payment(order.id).id)
    assert shop.charges(order.id) == (1, 0)
