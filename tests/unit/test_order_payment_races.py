"""An order and its payment across orders and payments, on their in-memory fakes joined the way
the mesh joins them: orders' synchronous ProcessPayment reaches the payments service layer (its
errors mapped to the status codes gRPC carries and back through orders' client), the payment
tasks in orders' outbox reach a payment worker and the events in payments' outbox reach orders'
consumer, and orders' status changes reach the workers' `payment-cancellations` consumer, each
stream in the order it was written, when the test delivers it. So a race between the two
services is a sequence of steps the test chooses."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from contracts import Topic
from services.common.errors import DomainError
from services.common.messaging.envelope import validate
from services.common.rpc import status_for
from services.orders.clients import PaymentOutcome, payment_error, payment_outcome
from services.orders.domain import Order, OrderItem, OrderStatus
from services.orders.service import OrderService, on_event
from services.payments import api
from services.payments.domain import Payment, PaymentStatus
from services.payments.notifier import PaymentNotifier
from services.payments.service import PaymentService
from services.payments.tasks import PaymentTasks, UnpaidOrders
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.database import OutboxMessage
from tests.unit.fakes.orders import FakeUsersClient, InMemoryOrdersDatabase, rpc_error
from tests.unit.fakes.payments import FakeProvider, InMemoryPaymentsDatabase
from tests.unit.fakes.users import user_blocked

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
        worker = self._payments_process("payments-worker-1")
        self.worker = PaymentTasks(worker)
        self.cancellations = UnpaidOrders(worker)
        self.grpc = PaymentsOverGrpc(self.payments)
        self.orders_db = InMemoryOrdersDatabase()
        self.orders = OrderService(self.orders_db, FakeUsersClient(), self.grpc)
        self._events_delivered = 0
        self._status_changes_delivered = 0

    def _payments_process(self, instance: str) -> PaymentService:
        notifier = PaymentNotifier("postgresql://unused")
        self.payments_db.listeners.append(notifier)
        return PaymentService(self.payments_db, notifier, instance=instance, provider=self.provider)

    async def place(self, *, respond_async: bool = False) -> Order:
        return (await self.orders.place_order("alice", ITEMS, respond_async=respond_async)).order

    def _publish_tasks(self) -> list[OutboxMessage]:
        """orders' relay publishes the payment tasks not published yet, the held-back ones
        too: a test that runs the worker has let their hold run out."""
        outbox = self.orders_db.tables.outbox
        tasks = [m for m in outbox if m.topic == Topic.PAYMENT_TASKS and not m.published]
        outbox[:] = [replace(m, published=True) if m in tasks else m for m in outbox]
        return tasks

    async def run_worker(self) -> None:
        """The worker handles every payment task orders has published so far, in order."""
        for task in self._publish_tasks():
            await self.worker(None, validate(task.event))

    async def run_cancellations(self) -> None:
        """The workers' cancellation consumer handles every order status change so far."""
        changes = self.orders_db.outbox(Topic.ORDER_EVENTS)[self._status_changes_delivered :]
        self._status_changes_delivered += len(changes)
        for change in changes:
            await self.cancellations(None, validate(change.event))

    async def deliver_payment_events(self) -> None:
        """orders' consumer handles every payment event published so far, in order."""
        events = self.payments_db.outbox(Topic.PAYMENT_EVENTS)[self._events_delivered :]
        self._events_delivered += len(events)
        for message in events:
            async with self.orders_db.transaction() as uow:
                await on_event(uow, validate(message.event))

    async def settle(self) -> None:
        """Kafka catches up: every stream flows until none has anything new."""
        while (
            self._status_changes_delivered < len(self.orders_db.outbox(Topic.ORDER_EVENTS))
            or not all(task.published for task in self.orders_db.outbox(Topic.PAYMENT_TASKS))
            or self._events_delivered < len(self.payments_db.outbox(Topic.PAYMENT_EVENTS))
        ):
            await self.run_cancellations()
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
async def test_an_order_paid_at_once_is_charged_once_and_its_task_never_reaches_a_worker():
    shop = Shop()
    order = await shop.place()
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.PAID
    assert shop.payment(order.id).status == PaymentStatus.SUCCEEDED
    assert shop.charges(order.id) == (1, 0)
    assert shop.orders_db.outbox(Topic.PAYMENT_TASKS) == []


@pytest.mark.parametrize("when", ["before", "after"])
@in_a_loop
async def test_an_order_whose_task_outlives_its_hold_during_the_synchronous_payment_is_charged_once(
    when: str,
):
    shop = Shop()
    # the machine is so slow that the hold runs out while orders waits for payments: a worker
    # handles the task before payments sees the synchronous call, or after it charged
    setattr(shop.grpc, when, shop.run_worker)
    order = await shop.place()
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.PAID
    assert shop.order(order.id).payment_id == str(shop.payment(order.id).id)
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


# --- an order that ends unpaid leaves nobody charged ----------------------------------------


async def block_in_orders(shop: Shop, user_id: str) -> None:
    """orders' consumer group reads UserBlocked; payments' group has not read it yet."""
    async with shop.orders_db.transaction() as uow:
        await on_event(uow, user_blocked(user_id))


@in_a_loop
async def test_a_payment_pending_order_cancelled_before_a_worker_charges_it_is_never_charged():
    shop = Shop()
    order = await shop.place(respond_async=True)
    await shop.orders.cancel_order(order.id)
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.CANCELLED
    assert shop.charges(order.id) == (0, 0)


@in_a_loop
async def test_a_cancelled_order_a_worker_charged_first_is_refunded():
    shop = Shop()
    order = await shop.place(respond_async=True)
    await shop.run_worker()  # charged; orders has not heard of it yet
    await shop.orders.cancel_order(order.id)
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.REFUNDED
    assert shop.charges(order.id) == (1, 1)


@in_a_loop
async def test_an_order_cancelled_while_its_synchronous_payment_runs_is_refunded():
    shop = Shop()
    placed: list[Order] = []

    async def cancel() -> None:
        (order,) = shop.orders_db.tables.orders.values()
        placed.append(order)
        await shop.orders.cancel_order(order.id)

    shop.grpc.after = cancel  # the charge is made; the cancel commits before orders hears of it
    assert (await shop.place()).status == OrderStatus.CANCELLED
    await shop.settle()
    (order,) = placed
    assert shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.REFUNDED
    assert shop.charges(order.id) == (1, 1)


@in_a_loop
async def test_an_order_cancelled_before_its_slow_synchronous_call_reached_payments_is_uncharged():
    shop = Shop()

    async def cancel_and_let_the_cancellation_through() -> None:
        (order,) = shop.orders_db.tables.orders.values()
        await shop.orders.cancel_order(order.id)
        await shop.run_cancellations()

    shop.grpc.before = cancel_and_let_the_cancellation_through
    order = await shop.place()
    await shop.settle()
    assert order.status == shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.CANCELLED
    assert shop.charges(order.id) == (0, 0)


@in_a_loop
async def test_a_blocked_users_queued_order_is_not_charged_though_payments_missed_the_block():
    shop = Shop()
    order = await shop.place(respond_async=True)
    await block_in_orders(shop, "alice")
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.CANCELLED
    assert shop.charges(order.id) == (0, 0)


@in_a_loop
async def test_a_blocked_users_order_a_worker_charged_before_the_cancellation_is_refunded():
    shop = Shop()
    order = await shop.place(respond_async=True)
    await block_in_orders(shop, "alice")
    await shop.run_worker()  # payments has not recorded the block: the task is charged
    await shop.settle()
    assert shop.order(order.id).status == OrderStatus.CANCELLED
    assert shop.payment(order.id).status == PaymentStatus.REFUNDED
    assert shop.charges(order.id) == (1, 1)


@in_a_loop
async def test_a_conflicting_payment_for_an_order_fails_it_and_is_refunded():
    shop = Shop()
    order = await shop.place(respond_async=True)
    # the order's user pays its id directly (POST /payments), for 1 kopeck
    await shop.payments.process_payment(str(order.id), "alice", 1, "RUB")
    await shop.settle()
    ended = shop.order(order.id)
    assert ended.status == OrderStatus.FAILED
    assert ended.status_reason == (
        f"payment refused: order {order.id} already has a payment with a different amount"
    )
    assert shop.payment(order.id).status == PaymentStatus.REFUNDED
    assert shop.charges(order.id) == (1, 1)
