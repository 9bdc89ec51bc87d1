"""The orders use cases on in-memory fakes: placing an order (paid at once, declined, deferred to
the payment queue, replayed by its Idempotency-Key), cancelling it, and the consumer's payment
and blocked-user events, with the outbox events each unit of work commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from contracts import EventType, Topic
from contracts.cloudevents import cloud_event
from services.common.errors import Unavailable
from services.common.messaging.envelope import Event, validate
from services.common.uow import in_consumer_transaction
from services.orders.clients import PaymentOutcome, PaymentResult
from services.orders.domain import Order, OrderItem, OrderStatus, new_order
from services.orders.repository import PostgresOrdersUnitOfWork
from services.orders.service import (
    IdempotencyKeyReusedError,
    OrderNotCancellable,
    OrderService,
    OrdersUnitOfWork,
    UnknownUserError,
    UserBlockedError,
    cancel_orders_of_blocked_user,
    complete_payment,
    on_event,
)
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.orders import (
    FakePaymentsClient,
    FakeUsersClient,
    InMemoryOrdersDatabase,
    PaymentCall,
    declined,
    payments_error,
    still_pending,
    succeeded,
    unavailable,
)
from tests.unit.fakes.users import user_blocked

ITEMS = [OrderItem("book", 2), OrderItem("pen", 1)]


class Orders:
    """The service layer over a fresh in-memory database and fake upstreams."""

    def __init__(self, payments: FakePaymentsClient | None = None, **users: set[str]) -> None:
        self.db = InMemoryOrdersDatabase()
        self.users = FakeUsersClient(**users)
        self.payments = payments or FakePaymentsClient()
        self.service = OrderService(self.db, self.users, self.payments)

    async def place(self, user_id: str = "alice", **options: object) -> Order:
        return (await self.service.place_order(user_id, ITEMS, **options)).order

    async def consume(self, event: Event) -> None:
        """One delivery to the `orders` consumer group, in the consumer's transaction."""
        async with self.db.transaction() as uow:
            await on_event(uow, event)

    def tasks(self, order_id: uuid.UUID) -> list[tuple[str, str]]:
        """The payment tasks queued for the order, in commit order: (type, "held back" or
        "due")."""
        return [
            (m.type, "held back" if m.held else "due")
            for m in self.db.outbox(Topic.PAYMENT_TASKS)
            if m.key == str(order_id)
        ]

    def statuses(self, order_id: uuid.UUID) -> list[str]:
        """The statuses order-events was told about for the order, in commit order."""
        return [
            message.data["status"]
            for message in self.db.outbox(Topic.ORDER_EVENTS)
            if message.key == str(order_id)
        ]


def payment_event(order_id: uuid.UUID | str, kind: str, **data: object) -> Event:
    """A payment event for an order of ITEMS placed by alice, as payments writes it."""
    payment = {"orderId": str(order_id), "userId": "alice", "amount": 300, "currency": "RUB"}
    return validate(
        cloud_event(source="payments", type=kind, subject=f"order/{order_id}", data=payment | data)
    )


# --- placing an order ----------------------------------------------------------------------


@in_a_loop
async def test_an_order_paid_at_once_is_paid_with_its_payment_id_and_one_status_event():
    orders = Orders(FakePaymentsClient(succeeded("pay-7")))
    order = await orders.place()
    assert (order.status, order.payment_id) == (OrderStatus.PAID, "pay-7")
    assert orders.db.stored(order.id) == order
    assert orders.payments.calls == [PaymentCall(order.id, "alice", 300, "RUB")]
    (event,) = orders.db.outbox(Topic.ORDER_EVENTS)
    assert (event.key, event.type) == (str(order.id), EventType.ORDER_STATUS_CHANGED)
    assert event.data == {
        "orderId": str(order.id),
        "userId": "alice",
        "status": "PAID",
        "totalPrice": 300,
        "currency": "RUB",
        "paymentId": "pay-7",
    }
    # held back with the order, withdrawn with its PAID: no worker hears of the order
    assert orders.tasks(order.id) == []


@in_a_loop
async def test_a_declined_payment_fails_the_order_with_the_decline_reason():
    orders = Orders(FakePaymentsClient(declined("insufficient funds")))
    order = await orders.place()
    assert (order.status, order.status_reason) == (OrderStatus.FAILED, "insufficient funds")
    assert orders.statuses(order.id) == ["FAILED"]
    assert orders.tasks(order.id) == []


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED],
    ids=["payments-down-or-circuit-open", "deadline"],
)
@in_a_loop
async def test_payments_unavailable_leaves_the_order_payment_pending_with_a_queued_task(code):
    orders = Orders(FakePaymentsClient(unavailable(code)))
    order = await orders.place()
    assert order.status == OrderStatus.PAYMENT_PENDING
    assert order.status_reason == f"payments unavailable ({code.name})"
    assert orders.statuses(order.id) == ["PAYMENT_PENDING"]
    (task,) = orders.db.outbox(Topic.PAYMENT_TASKS)
    # released with the PAYMENT_PENDING: a worker charges the order now
    assert (task.key, task.type, task.held) == (str(order.id), EventType.PAYMENT_REQUESTED, False)
    assert task.data == {
        "orderId": str(order.id),
        "userId": "alice",
        "amount": 300,
        "currency": "RUB",
    }


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, "user is blocked"),
        (grpc.StatusCode.FAILED_PRECONDITION, "order o already has a payment with another amount"),
        (grpc.StatusCode.INVALID_ARGUMENT, "amount must be at most 1000000000000 minor units"),
    ],
)
@in_a_loop
async def test_a_payment_payments_refuses_fails_the_order_with_the_refusal_as_its_reason(
    code, reason
):
    orders = Orders(FakePaymentsClient(payments_error(code, reason)))
    order = await orders.place()
    assert (order.status, order.status_reason) == (OrderStatus.FAILED, f"payment refused: {reason}")
    assert orders.db.stored(order.id) == order
    assert orders.statuses(order.id) == ["FAILED"]
    assert len(orders.payments.calls) == 1
    assert orders.tasks(order.id) == []


@in_a_loop
async def test_an_unexpected_payments_error_is_no_refusal_and_leaves_the_order_to_the_queue():
    orders = Orders(FakePaymentsClient(payments_error(grpc.StatusCode.INTERNAL, "bug")))
    order = await orders.place()
    assert (order.status, order.status_reason) == (
        OrderStatus.PAYMENT_PENDING,
        "payment attempt failed (INTERNAL)",
    )
    assert orders.tasks(order.id) == [(EventType.PAYMENT_REQUESTED, "due")]


@in_a_loop
async def test_a_payment_still_charging_elsewhere_is_deferred_to_the_queue():
    orders = Orders(FakePaymentsClient(still_pending()))
    order = await orders.place()
    assert (order.status, order.status_reason) == (
        OrderStatus.PAYMENT_PENDING,
        "payment still processing",
    )
    assert orders.tasks(order.id) == [(EventType.PAYMENT_REQUESTED, "due")]


@in_a_loop
async def test_respond_async_queues_the_payment_without_calling_payments():
    orders = Orders()
    order = await orders.place(respond_async=True)
    assert (order.status, order.status_reason) == (OrderStatus.PAYMENT_PENDING, "payment queued")
    assert orders.db.stored(order.id) == order
    assert orders.payments.calls == []
    assert orders.statuses(order.id) == ["PAYMENT_PENDING"]
    assert orders.tasks(order.id) == [(EventType.PAYMENT_REQUESTED, "due")]
    assert orders.db.transactions.committed == 1


@in_a_loop
async def test_a_blocked_user_places_no_order_and_nothing_is_stored():
    orders = Orders(blocked={"mallory"})
    with pytest.raises(UserBlockedError):
        await orders.place("mallory")
    assert orders.db.tables.orders == {}
    assert orders.db.tables.outbox == []
    assert orders.payments.calls == []


@in_a_loop
async def test_an_unknown_user_places_no_order():
    orders = Orders(unknown={"ghost"})
    with pytest.raises(UnknownUserError):
        await orders.place("ghost")
    assert orders.db.tables.orders == {}


@in_a_loop
async def test_users_being_unavailable_stores_nothing():
    orders = Orders()
    orders.users.down = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(Unavailable, match="users did not answer in time"):
        await orders.place()
    assert orders.db.tables.orders == {}
    assert orders.db.tables.idempotency_keys == {}


@in_a_loop
async def test_an_orders_task_is_held_back_while_payments_is_called_and_withdrawn_once_paid():
    async def look_at_what_is_committed(call: PaymentCall) -> PaymentOutcome:
        committed = orders.db.stored(call.order_id)
        assert (committed.status, orders.tasks(call.order_id)) == (
            OrderStatus.PENDING,
            [(EventType.PAYMENT_REQUESTED, "held back")],
        )
        (task,) = orders.db.outbox(Topic.PAYMENT_TASKS)
        assert task.data == {
            "orderId": str(call.order_id),
            "userId": "alice",
            "amount": 300,
            "currency": "RUB",
        }
        return succeeded()

    orders = Orders(FakePaymentsClient(look_at_what_is_committed))
    order = await orders.place()
    assert order.status == OrderStatus.PAID
    assert orders.tasks(order.id) == []


class ProcessDied(BaseException):
    """The orders process stopping (SIGKILL, a crash) while it waits for payments."""


@in_a_loop
async def test_an_order_left_pending_when_its_process_dies_mid_payment_is_paid_by_its_task():
    async def die(_call: PaymentCall) -> PaymentOutcome:
        raise ProcessDied

    orders = Orders(FakePaymentsClient(die))
    with pytest.raises(ProcessDied):
        await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    (order,) = orders.db.tables.orders.values()
    assert order.status == OrderStatus.PENDING
    assert orders.tasks(order.id) == [(EventType.PAYMENT_REQUESTED, "held back")]
    # once the hold is up a payment worker charges the task; its PaymentSucceeded settles the
    # order
    await orders.consume(payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-1"))
    again = await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    assert (again.replayed, again.order.status) == (True, OrderStatus.PAID)


class TasksUnwritable:
    """The orders database with an outbox that fails to take payment tasks."""

    def __init__(self, db: InMemoryOrdersDatabase) -> None:
        self.orders = db.orders
        self._db = db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[OrdersUnitOfWork]:
        async with self._db.transaction() as uow:
            yield TasksUnwritableUnitOfWork(uow)


class TasksUnwritableUnitOfWork:
    def __init__(self, uow: OrdersUnitOfWork) -> None:
        self.orders = uow.orders
        self._outbox = uow.outbox
        self.outbox = self

    async def add(
        self, topic: str, key: str, event: Mapping[str, Any], *, hold_s: float | None = None
    ) -> None:
        if topic == Topic.PAYMENT_TASKS:
            raise ConnectionError("database gone")
        await self._outbox.add(topic, key, event, hold_s=hold_s)

    async def withdraw(self, topic: str, key: str) -> None:
        await self._outbox.withdraw(topic, key)

    async def release(self, topic: str, key: str) -> None:
        await self._outbox.release(topic, key)


@pytest.mark.parametrize("respond_async", [False, True])
@in_a_loop
async def test_an_order_whose_payment_task_cannot_be_written_is_not_stored(respond_async):
    orders = Orders()
    service = OrderService(TasksUnwritable(orders.db), orders.users, orders.payments)
    with pytest.raises(ConnectionError):
        await service.place_order(
            "alice", ITEMS, idempotency_key="k-1", respond_async=respond_async
        )
    assert (orders.db.tables.orders, orders.db.tables.idempotency_keys) == ({}, {})
    assert orders.db.tables.outbox == []
    assert orders.payments.calls == []


# --- Idempotency-Key -----------------------------------------------------------------------


@in_a_loop
async def test_a_retry_with_the_same_idempotency_key_replays_the_first_order_unpaid_again():
    orders = Orders()
    first = await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    again = await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.order == first.order
    assert len(orders.db.tables.orders) == 1
    assert len(orders.payments.calls) == 1
    assert orders.users.calls == ["alice"]
    assert orders.statuses(first.order.id) == ["PAID"]


@in_a_loop
async def test_a_replay_shows_the_order_as_it_is_now():
    orders = Orders(FakePaymentsClient(unavailable(grpc.StatusCode.UNAVAILABLE)))
    first = await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    await orders.consume(
        payment_event(first.order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-9")
    )
    again = await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    assert (again.replayed, again.order.status) == (True, OrderStatus.PAID)


@in_a_loop
async def test_an_idempotency_key_reused_with_another_body_is_refused_and_stores_nothing():
    orders = Orders()
    await orders.service.place_order("alice", ITEMS, idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReusedError):
        await orders.service.place_order("alice", [OrderItem("book", 3)], idempotency_key="k-1")
    assert len(orders.db.tables.orders) == 1
    assert len(orders.payments.calls) == 1


@in_a_loop
async def test_concurrent_requests_with_one_idempotency_key_store_and_charge_one_order():
    orders = Orders()
    placed = await asyncio.gather(
        *(orders.service.place_order("alice", ITEMS, idempotency_key="k-1") for _ in range(3))
    )
    assert sorted(p.replayed for p in placed) == [False, True, True]
    assert len({p.order.id for p in placed}) == 1
    assert len(orders.db.tables.orders) == 1
    assert len(orders.payments.calls) == 1
    # all three passed the first look-up before any had claimed the key
    assert orders.users.calls == ["alice"] * 3


@in_a_loop
async def test_concurrent_requests_with_one_key_but_different_bodies_refuse_the_loser():
    orders = Orders()
    outcomes = await asyncio.gather(
        orders.service.place_order("alice", ITEMS, idempotency_key="k-1"),
        orders.service.place_order("alice", [OrderItem("pen", 5)], idempotency_key="k-1"),
        return_exceptions=True,
    )
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "PlacedOrder",
        "IdempotencyKeyReusedError",
    ]
    assert len(orders.db.tables.orders) == 1


# --- reading -------------------------------------------------------------------------------


@in_a_loop
async def test_a_users_orders_are_listed_oldest_first_and_only_theirs():
    orders = Orders()
    first = await orders.place("alice")
    second = await orders.place("alice", respond_async=True)
    await orders.place("bob")
    assert [o.id for o in await orders.service.list_orders("alice")] == [first.id, second.id]
    assert await orders.service.get_order(second.id) == second
    assert await orders.service.get_order(uuid.uuid4()) is None


# --- cancelling ----------------------------------------------------------------------------


@in_a_loop
async def test_a_payment_pending_order_is_cancelled_with_a_status_event():
    orders = Orders()
    order = await orders.place(respond_async=True)
    cancelled = await orders.service.cancel_order(order.id)
    assert cancelled is not None and cancelled.status == OrderStatus.CANCELLED
    assert orders.db.stored(order.id) == cancelled
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "CANCELLED"]


@in_a_loop
async def test_cancelling_a_cancelled_order_again_changes_nothing():
    orders = Orders()
    order = await orders.place(respond_async=True)
    first = await orders.service.cancel_order(order.id)
    again = await orders.service.cancel_order(order.id)
    assert again == first
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "CANCELLED"]


@pytest.mark.parametrize(
    "payments", [FakePaymentsClient(succeeded()), FakePaymentsClient(declined("no"))]
)
@in_a_loop
async def test_a_settled_order_cannot_be_cancelled(payments):
    orders = Orders(payments)
    order = await orders.place()
    with pytest.raises(OrderNotCancellable):
        await orders.service.cancel_order(order.id)
    assert orders.db.stored(order.id) == order


@in_a_loop
async def test_cancelling_an_unknown_order_finds_nothing():
    assert await Orders().service.cancel_order(uuid.uuid4()) is None


@in_a_loop
async def test_a_cancel_during_the_synchronous_payment_wins_over_the_late_payment():
    async def cancel_then_succeed(call: PaymentCall) -> PaymentOutcome:
        await orders.service.cancel_order(call.order_id)
        return succeeded()

    orders = Orders(FakePaymentsClient(cancel_then_succeed))
    order = await orders.place()
    assert order.status == OrderStatus.CANCELLED
    assert orders.statuses(order.id) == ["CANCELLED"]


@in_a_loop
async def test_a_cancelled_payment_answered_to_the_synchronous_call_leaves_the_order_cancelled():
    async def cancel_then_answer_cancelled(call: PaymentCall) -> PaymentOutcome:
        await orders.service.cancel_order(call.order_id)
        return PaymentOutcome("pay-1", PaymentResult.CANCELLED, "")

    orders = Orders(FakePaymentsClient(cancel_then_answer_cancelled))
    order = await orders.place()
    assert (order.status, order.status_reason) == (OrderStatus.CANCELLED, None)
    assert orders.statuses(order.id) == ["CANCELLED"]


@pytest.mark.parametrize("ended", ["cancelled", "declined"])
@in_a_loop
async def test_an_order_that_ends_unpaid_says_so_with_its_price_for_payments_to_cancel(ended):
    orders = Orders(FakePaymentsClient(declined("no")))
    if ended == "cancelled":
        order = await orders.place(respond_async=True)
        await orders.service.cancel_order(order.id)
    else:
        order = await orders.place()
    last = orders.db.outbox(Topic.ORDER_EVENTS)[-1]
    assert (last.data["status"], last.data["totalPrice"], last.data["currency"]) == (
        "CANCELLED" if ended == "cancelled" else "FAILED",
        300,
        "RUB",
    )


@in_a_loop
async def test_a_cancel_racing_the_payment_event_leaves_the_order_paid():
    orders = Orders()
    order = await orders.place(respond_async=True)
    paid = payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-1")
    cancelled, _ = await asyncio.gather(orders.service.cancel_order(order.id), orders.consume(paid))
    assert cancelled is not None and cancelled.status == OrderStatus.PAID
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "PAID"]


@in_a_loop
async def test_a_cancel_that_commits_first_makes_the_payment_event_a_no_op():
    orders = Orders()
    order = await orders.place(respond_async=True)
    await orders.service.cancel_order(order.id)
    await orders.consume(payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-1"))
    assert orders.db.stored(order.id).status == OrderStatus.CANCELLED
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "CANCELLED"]


# --- the consumer: payment outcomes --------------------------------------------------------


@in_a_loop
async def test_payment_succeeded_pays_a_payment_pending_order():
    orders = Orders()
    order = await orders.place(respond_async=True)
    await orders.consume(payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-3"))
    stored = orders.db.stored(order.id)
    assert (stored.status, stored.payment_id, stored.status_reason) == (
        OrderStatus.PAID,
        "pay-3",
        None,
    )
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "PAID"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [({"declineReason": "over the limit"}, "over the limit"), ({}, "payment failed")],
)
@in_a_loop
async def test_payment_failed_fails_the_order_with_its_reason(data, reason):
    orders = Orders()
    order = await orders.place(respond_async=True)
    await orders.consume(
        payment_event(order.id, EventType.PAYMENT_FAILED, paymentId="pay-4", **data)
    )
    stored = orders.db.stored(order.id)
    assert (stored.status, stored.status_reason) == (OrderStatus.FAILED, reason)


@pytest.mark.parametrize(
    "other", [{"amount": 1}, {"currency": "USD"}, {"userId": "mallory"}], ids=str
)
@pytest.mark.parametrize(
    "kind", [EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_FAILED, EventType.PAYMENT_REFUSED]
)
@in_a_loop
async def test_a_payment_event_for_another_amount_currency_or_user_settles_nothing(kind, other):
    orders = Orders()
    order = await orders.place(respond_async=True)
    await orders.consume(payment_event(order.id, kind, paymentId="pay-x", **other))
    assert orders.db.stored(order.id) == order
    assert orders.statuses(order.id) == ["PAYMENT_PENDING"]


@in_a_loop
async def test_payment_refused_fails_a_payment_pending_order_with_the_reason():
    orders = Orders()
    order = await orders.place(respond_async=True)
    await orders.consume(
        payment_event(order.id, EventType.PAYMENT_REFUSED, reason="user is blocked")
    )
    stored = orders.db.stored(order.id)
    assert (stored.status, stored.status_reason, stored.payment_id) == (
        OrderStatus.FAILED,
        "payment refused: user is blocked",
        None,
    )
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "FAILED"]


@in_a_loop
async def test_payment_refused_for_an_order_already_paid_changes_nothing():
    orders = Orders(FakePaymentsClient(succeeded("pay-1")))
    order = await orders.place()
    await orders.consume(
        payment_event(order.id, EventType.PAYMENT_REFUSED, reason="user is blocked")
    )
    assert orders.db.stored(order.id) == order


async def store_pending(orders: Orders, user_id: str = "alice") -> Order:
    """An order left PENDING: its process stopped between storing it and settling it."""
    order = new_order(user_id, ITEMS)
    async with orders.db.transaction() as uow:
        await uow.orders.add(order)
    return order


@in_a_loop
async def test_a_payment_event_settles_an_order_left_pending_by_a_crash():
    orders = Orders()
    order = await store_pending(orders)
    async with orders.db.transaction() as uow:
        stored = await complete_payment(
            uow, payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-5")
        )
    assert stored == orders.db.stored(order.id)
    assert (stored.status, stored.payment_id) == (OrderStatus.PAID, "pay-5")
    assert orders.statuses(order.id) == ["PAID"]


@in_a_loop
async def test_a_duplicate_payment_event_changes_the_order_once():
    orders = Orders()
    order = await orders.place(respond_async=True)
    event = payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-1")
    await orders.consume(event)
    await orders.consume(event)
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "PAID"]


@in_a_loop
async def test_the_queued_outcome_of_an_order_already_paid_at_once_is_ignored():
    orders = Orders(FakePaymentsClient(succeeded("pay-1")))
    order = await orders.place()
    await orders.consume(payment_event(order.id, EventType.PAYMENT_FAILED, paymentId="pay-2"))
    assert orders.db.stored(order.id) == order
    assert orders.statuses(order.id) == ["PAID"]


@pytest.mark.parametrize("order_id", ["not-an-order-id", str(uuid.uuid4())])
@in_a_loop
async def test_a_payment_event_for_no_known_order_is_ignored(order_id):
    orders = Orders()
    async with orders.db.transaction() as uow:
        assert (
            await complete_payment(uow, payment_event(order_id, EventType.PAYMENT_SUCCEEDED))
            is None
        )
    assert orders.db.tables.outbox == []


# --- the consumer: blocked users -----------------------------------------------------------


@in_a_loop
async def test_a_blocked_users_unsettled_orders_are_cancelled_and_settled_ones_kept():
    orders = Orders(FakePaymentsClient(succeeded(), declined("no")))
    paid, failed = await orders.place(), await orders.place()
    queued = await orders.place(respond_async=True)
    other = await orders.place("bob", respond_async=True)
    await orders.consume(user_blocked("alice", reason="fraud"))
    assert orders.db.stored(paid.id) == paid
    assert orders.db.stored(failed.id) == failed
    cancelled = orders.db.stored(queued.id)
    assert (cancelled.status, cancelled.status_reason) == (OrderStatus.CANCELLED, "user blocked")
    assert orders.statuses(queued.id) == ["PAYMENT_PENDING", "CANCELLED"]
    assert orders.db.stored(other.id) == other


@in_a_loop
async def test_a_blocked_users_pending_orders_are_cancelled_once_whatever_the_redeliveries():
    orders = Orders()
    pending = await store_pending(orders, "carol")
    queued = await orders.place("carol", respond_async=True)
    async with orders.db.transaction() as uow:
        first = await cancel_orders_of_blocked_user(uow, "carol")
    async with orders.db.transaction() as uow:
        again = await cancel_orders_of_blocked_user(uow, "carol")
    assert {order.id for order in first} == {pending.id, queued.id}
    assert again == []
    assert orders.statuses(pending.id) == ["CANCELLED"]
    assert orders.statuses(queued.id) == ["PAYMENT_PENDING", "CANCELLED"]


class ReadBeforeTheSettle:
    """A unit of work whose list of orders was read before another transaction settled one
    (Postgres' READ COMMITTED lets that happen between a SELECT and the UPDATE after it)."""

    def __init__(self, uow: OrdersUnitOfWork, stale: list[Order]) -> None:
        self.orders = self
        self.outbox = uow.outbox
        self._uow = uow
        self._stale = stale

    async def list_for_user(self, user_id: str) -> list[Order]:
        return self._stale

    async def update_status(self, order: Order, expected: list[OrderStatus]) -> Order | None:
        return await self._uow.orders.update_status(order, expected)


@in_a_loop
async def test_an_order_settled_after_the_blocked_users_orders_were_read_is_not_cancelled():
    orders = Orders()
    order = await orders.place(respond_async=True)
    stale = await orders.db.orders.list_for_user("alice")
    await orders.consume(payment_event(order.id, EventType.PAYMENT_SUCCEEDED, paymentId="pay-1"))
    async with orders.db.transaction() as uow:
        cancelled = await cancel_orders_of_blocked_user(ReadBeforeTheSettle(uow, stale), "alice")
    assert cancelled == []
    assert orders.db.stored(order.id).status == OrderStatus.PAID
    assert orders.statuses(order.id) == ["PAYMENT_PENDING", "PAID"]


@in_a_loop
async def test_other_user_events_are_not_the_orders_consumers_business():
    orders = Orders()
    order = await orders.place(respond_async=True)
    created = cloud_event(
        source="users",
        type="shopmesh.user.created.v1",
        subject="user/alice",
        data={"userId": "alice"},
    )
    await orders.consume(validate(created))
    assert orders.db.stored(order.id) == order


class ConsumerConnection:
    """The connection the consumer hands its handler, already in the consumer's transaction."""

    def __init__(self) -> None:
        self.queries: list[tuple[object, ...]] = []

    def transaction(self) -> None:
        raise AssertionError("the handler opened a transaction of its own")

    async def fetch(self, _sql: str, *args: object) -> list[object]:
        self.queries.append(args)
        return []


@in_a_loop
async def test_the_wired_consumer_handler_runs_the_use_case_in_the_consumers_transaction():
    handler = in_consumer_transaction(PostgresOrdersUnitOfWork, on_event)
    conn = ConsumerConnection()
    await handler(conn, user_blocked("mallory", reason="fraud"))
    assert conn.queries == [("mallory",)]
