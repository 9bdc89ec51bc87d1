"""The payments use cases on in-memory fakes: ProcessPayment charging each order once (repeated,
concurrent and queued calls, stalled charges taken over), cancelling an order's payment (before,
during and after its charge), blocked users and refused tasks, reading and watching payments,
with the outcome events each unit of work commits."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from contracts import EventType, Topic
from contracts.cloudevents import cloud_event
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.messaging.envelope import Event, validate
from services.payments import domain
from services.payments.domain import Payment, PaymentStatus
from services.payments.notifier import PaymentNotifier
from services.payments.service import LEASE_S, USER_BLOCKED_MESSAGE, PaymentService, on_user_event
from services.payments.tasks import PaymentTasks, UnpaidOrders
from tests.unit.fakes import in_a_loop, let_the_others_run
from tests.unit.fakes.payments import FakeProvider, InMemoryPaymentsDatabase
from tests.unit.fakes.users import user_blocked

OVER_THE_LIMIT = domain.SINGLE_PAYMENT_LIMIT + 1


class Payments:
    """One payments process (API server or worker) over a shared in-memory database."""

    def __init__(self, db: InMemoryPaymentsDatabase | None = None, instance: str = "payments-1"):
        self.notifier = PaymentNotifier("postgresql://unused")
        self.db = db or InMemoryPaymentsDatabase()
        self.db.listeners.append(self.notifier)
        self.provider = FakeProvider()
        self.service = PaymentService(
            self.db, self.notifier, instance=instance, provider=self.provider
        )
        self.tasks = PaymentTasks(self.service)
        self.unpaid_orders = UnpaidOrders(self.service)

    async def pay(self, order_id: str = "o-1", amount: int = 1500, **options: float) -> Payment:
        return await self.service.process_payment(order_id, "alice", amount, "RUB", **options)

    async def cancel(self, order_id: str = "o-1", amount: int = 1500) -> Payment:
        return await self.service.cancel_payment(order_id, "alice", amount, "RUB")

    async def consume(self, event: Event) -> None:
        async with self.db.transaction() as uow:
            await on_user_event(uow, event)

    def events(self) -> list[tuple[str, str, str]]:
        return [(m.key, m.type, m.data["paymentId"]) for m in self.db.outbox(Topic.PAYMENT_EVENTS)]

    def event_types(self) -> list[str]:
        return [message.type for message in self.db.outbox(Topic.PAYMENT_EVENTS)]


def payment_task(order_id: str, amount: int = 1500) -> Event:
    event = cloud_event(
        source="orders",
        type="shopmesh.payment.requested.v1",
        subject=f"order/{order_id}",
        data={"orderId": order_id, "userId": "alice", "amount": amount, "currency": "RUB"},
    )
    return validate(event)


def order_status(order_id: str, status: str, *, priced: bool = True) -> Event:
    """orders' status change of an order of alice's for 1500 RUB (its price left out of
    events written before orders sent it)."""
    data = {"orderId": order_id, "userId": "alice", "status": status}
    if priced:
        data |= {"totalPrice": 1500, "currency": "RUB"}
    event = cloud_event(
        source="orders",
        type="shopmesh.order.status_changed.v1",
        subject=f"order/{order_id}",
        data=data,
    )
    return validate(event)


async def stalled(payments: Payments, order_id: str = "o-1") -> Payment:
    """A PENDING payment whose charger stopped (crashed, or stalled) right after claiming it."""
    payment = domain.new_payment(domain.payment_request(order_id, "alice", 1500, "RUB"))
    async with payments.db.transaction() as uow:
        inserted = await uow.payments.insert_pending(payment, lease_s=LEASE_S)
    assert inserted is not None
    return inserted


# --- ProcessPayment ------------------------------------------------------------------------


@in_a_loop
async def test_a_payment_is_charged_once_and_recorded_with_its_succeeded_event():
    payments = Payments()
    payment = await payments.pay()
    assert (payment.order_id, payment.status, payment.decline_reason) == (
        "o-1",
        PaymentStatus.SUCCEEDED,
        None,
    )
    assert payments.provider.charges == {"o-1": 1}
    assert payments.db.tables.charged_by[payment.id] == "payments-1"
    assert payments.events() == [("o-1", EventType.PAYMENT_SUCCEEDED, str(payment.id))]
    (event,) = payments.db.outbox(Topic.PAYMENT_EVENTS)
    assert event.data["amount"] == 1500 and event.data["userId"] == "alice"


@in_a_loop
async def test_an_amount_over_the_limit_is_declined_with_a_payment_failed_event():
    payments = Payments()
    payment = await payments.pay(amount=OVER_THE_LIMIT)
    assert (payment.status, payment.decline_reason) == (
        PaymentStatus.DECLINED,
        domain.DECLINED_OVER_LIMIT,
    )
    (event,) = payments.db.outbox(Topic.PAYMENT_EVENTS)
    assert event.type == EventType.PAYMENT_FAILED
    assert event.data["declineReason"] == domain.DECLINED_OVER_LIMIT


@in_a_loop
async def test_a_repeated_call_for_a_charged_order_answers_its_payment_without_a_charge():
    payments = Payments()
    first = await payments.pay()
    again = await payments.pay()
    assert again == first
    assert payments.provider.charges == {"o-1": 1}
    assert len(payments.events()) == 1


@in_a_loop
async def test_concurrent_calls_for_one_order_charge_it_once_and_both_get_the_outcome():
    payments = Payments()
    payments.provider.hold()
    calls = [asyncio.create_task(payments.pay()) for _ in range(3)]
    await payments.provider.charging.wait()
    await let_the_others_run()
    payments.provider.release()
    answered = await asyncio.gather(*calls)
    assert {p.status for p in answered} == {PaymentStatus.SUCCEEDED}
    assert len({p.id for p in answered}) == 1
    assert payments.provider.charges == {"o-1": 1}
    assert len(payments.events()) == 1


@in_a_loop
async def test_a_queued_task_and_a_synchronous_call_for_one_order_charge_it_once():
    api = Payments()
    worker = Payments(api.db, instance="payments-worker-1")
    api.provider.hold()
    synchronous = asyncio.create_task(api.pay("o-7"))
    await api.provider.charging.wait()
    task = asyncio.create_task(PaymentTasks(worker.service)(None, payment_task("o-7")))
    await let_the_others_run()
    api.provider.release()
    await asyncio.gather(synchronous, task)
    assert api.provider.charges + worker.provider.charges == {"o-7": 1}
    assert api.db.for_order("o-7").status == PaymentStatus.SUCCEEDED
    assert len(api.events()) == 1


@in_a_loop
async def test_a_task_delivered_twice_charges_once():
    payments = Payments()
    tasks = PaymentTasks(payments.service)
    await tasks(None, payment_task("o-3"))
    await tasks(None, payment_task("o-3"))
    assert payments.provider.charges == {"o-3": 1}
    assert tasks.handled == 2
    assert len(payments.events()) == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [({"amount": 1600}, "amount"), ({"user_id": "bob"}, "user_id")],
)
@in_a_loop
async def test_another_payment_for_a_charged_order_is_refused_naming_what_differs(change, named):
    payments = Payments()
    await payments.pay()
    request = {"order_id": "o-1", "user_id": "alice", "amount": 1500, "currency": "RUB"} | change
    with pytest.raises(FailedPrecondition, match=f"different {named}"):
        await payments.service.process_payment(**request)
    assert payments.provider.charges == {"o-1": 1}


@in_a_loop
async def test_a_user_is_told_another_users_order_is_not_found_as_for_an_order_nobody_has():
    payments = Payments()
    await payments.pay("o-1")  # alice's order, paid by orders

    async def as_bob(order_id: str) -> str:
        with pytest.raises(NotFound) as refused:
            await payments.service.process_payment(
                order_id, "bob", 1500, "RUB", own_payment_only=True
            )
        return str(refused.value)

    assert await as_bob("o-1") == "order o-1 not found"
    assert await as_bob("o-2") == "order o-2 not found"
    assert [p.order_id for p in payments.db.tables.payments.values()] == ["o-1"]
    assert payments.provider.charges == {"o-1": 1}


@in_a_loop
async def test_a_user_is_answered_their_own_orders_payment_but_charges_nothing_new():
    payments = Payments()
    paid = await payments.pay("o-1")
    mine = await payments.service.process_payment(
        "o-1", "alice", 1500, "RUB", own_payment_only=True
    )
    assert mine == paid
    with pytest.raises(FailedPrecondition, match="different amount"):
        await payments.service.process_payment("o-1", "alice", 1, "RUB", own_payment_only=True)
    assert payments.provider.charges == {"o-1": 1}


@in_a_loop
async def test_invalid_requests_store_nothing():
    payments = Payments()
    with pytest.raises(InvalidArgument):
        await payments.service.process_payment("o-1", "alice", 0, "RUB")
    assert payments.db.tables.payments == {}


@in_a_loop
async def test_a_stalled_payment_is_taken_over_once_its_lease_runs_out():
    payments = Payments()
    claimed = await stalled(payments)
    payments.db.clock.advance(LEASE_S + 0.1)
    payment = await payments.pay()
    assert (payment.id, payment.status) == (claimed.id, PaymentStatus.SUCCEEDED)
    assert payments.provider.charges == {"o-1": 1}
    assert payments.db.tables.charged_by[payment.id] == "payments-1"


@in_a_loop
async def test_a_repeated_call_waits_for_the_outcome_until_its_deadline_then_answers_pending():
    payments = Payments()
    claimed = await stalled(payments)  # its lease still runs: the charger may yet finish
    payment = await payments.pay(time_remaining_s=0.15)
    assert (payment.id, payment.status) == (claimed.id, PaymentStatus.PENDING)
    assert payments.provider.charges == {}


@in_a_loop
async def test_a_stalled_charge_that_ends_after_a_takeover_records_nothing_twice():
    first = Payments()
    second = Payments(first.db, instance="payments-2")
    first.provider.hold()
    slow = asyncio.create_task(first.pay())
    await first.provider.charging.wait()
    first.db.clock.advance(LEASE_S + 0.1)
    taken_over = await second.pay()
    first.provider.release()
    late = await slow
    assert late == taken_over
    assert first.db.tables.charged_by[taken_over.id] == "payments-2"
    # the provider was asked twice (a real one gets the payment id as its idempotency key),
    # the outcome is recorded and announced once
    assert first.provider.charges + second.provider.charges == {"o-1": 2}
    assert len(first.events()) == 1


@in_a_loop
async def test_a_charge_is_recorded_even_when_its_caller_gives_up():
    payments = Payments()
    payments.provider.hold()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(payments.pay(), timeout=0.01)
    payments.provider.release()
    await payments.service.drain(timeout_s=1.0)
    assert payments.db.for_order("o-1").status == PaymentStatus.SUCCEEDED
    assert len(payments.events()) == 1


# --- cancelling an order's payment --------------------------------------------------------


@in_a_loop
async def test_a_cancellation_before_any_charge_holds_the_order_so_nothing_charges_it_later():
    payments = Payments()
    cancelled = await payments.cancel("o-1")
    assert cancelled.status == PaymentStatus.CANCELLED
    assert (await payments.pay("o-1")).id == cancelled.id
    await payments.tasks(None, payment_task("o-1"))
    assert payments.db.for_order("o-1") == cancelled
    assert payments.provider.charges == {}
    assert payments.events() == []


@in_a_loop
async def test_cancellations_after_the_charge_record_one_refund_with_one_refunded_event():
    api = Payments()
    worker = Payments(api.db, instance="payments-worker-1")
    charged = await api.pay("o-1")
    refunded = await asyncio.gather(worker.cancel("o-1"), worker.cancel("o-1"), api.cancel("o-1"))
    assert {(p.id, p.status) for p in refunded} == {(charged.id, PaymentStatus.REFUNDED)}
    assert api.db.for_order("o-1").status == PaymentStatus.REFUNDED
    assert api.provider.charges == {"o-1": 1}
    # concurrent cancellations may each ask the provider (a real one gets the payment id as
    # its idempotency key); the refund is recorded and announced once
    assert 1 <= sum((api.provider.refunds + worker.provider.refunds).values()) <= 3
    assert api.event_types() == [EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_REFUNDED]
    (event,) = api.db.outbox(Topic.PAYMENT_EVENTS)[1:]
    assert (event.key, event.data["paymentId"], event.data["amount"]) == (
        "o-1",
        str(charged.id),
        1500,
    )


@in_a_loop
async def test_a_cancellation_during_a_charge_waits_for_it_then_refunds_it():
    api = Payments()
    worker = Payments(api.db, instance="payments-worker-1")
    api.provider.hold()
    charge = asyncio.create_task(api.pay("o-1"))
    await api.provider.charging.wait()
    cancel = asyncio.create_task(worker.cancel("o-1"))
    await let_the_others_run()
    assert not cancel.done()
    api.provider.release()
    charged, cancelled = await asyncio.gather(charge, cancel)
    assert charged.status == PaymentStatus.SUCCEEDED
    assert (cancelled.id, cancelled.status) == (charged.id, PaymentStatus.REFUNDED)
    assert (api.provider.charges, worker.provider.refunds) == ({"o-1": 1}, {"o-1": 1})
    assert api.event_types() == [EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_REFUNDED]


@in_a_loop
async def test_a_cancellation_finding_a_stalled_charge_completes_it_then_refunds_it():
    payments = Payments()
    claimed = await stalled(payments)
    payments.db.clock.advance(LEASE_S + 0.1)
    cancelled = await payments.cancel("o-1")
    assert (cancelled.id, cancelled.status) == (claimed.id, PaymentStatus.REFUNDED)
    assert (payments.provider.charges, payments.provider.refunds) == ({"o-1": 1}, {"o-1": 1})


@in_a_loop
async def test_a_cancellation_leaves_a_declined_payment_as_it_is():
    payments = Payments()
    declined = await payments.pay("o-1", OVER_THE_LIMIT)
    assert await payments.cancel("o-1", OVER_THE_LIMIT) == declined
    assert payments.provider.refunds == {}
    assert payments.event_types() == [EventType.PAYMENT_FAILED]


@in_a_loop
async def test_a_cancellation_refunds_a_payment_made_for_the_order_with_another_amount():
    payments = Payments()
    await payments.pay("o-1", amount=1)
    assert (await payments.cancel("o-1", amount=1500)).status == PaymentStatus.REFUNDED
    assert payments.provider.refunds == {"o-1": 1}


@pytest.mark.parametrize("status", ["CANCELLED", "FAILED"])
@in_a_loop
async def test_an_order_that_ended_unpaid_has_its_payment_cancelled_before_its_task_charges(status):
    payments = Payments()
    await payments.unpaid_orders(None, order_status("o-1", status))
    await payments.tasks(None, payment_task("o-1"))
    assert payments.db.for_order("o-1").status == PaymentStatus.CANCELLED
    assert payments.provider.charges == {}
    assert (payments.unpaid_orders.handled, payments.tasks.handled) == (1, 1)


@in_a_loop
async def test_an_order_that_ended_unpaid_after_its_task_charged_it_is_refunded_once():
    payments = Payments()
    await payments.tasks(None, payment_task("o-1"))
    ended = order_status("o-1", "CANCELLED")
    await payments.unpaid_orders(None, ended)
    await payments.unpaid_orders(None, ended)  # a redelivery
    assert payments.db.for_order("o-1").status == PaymentStatus.REFUNDED
    assert (payments.provider.charges, payments.provider.refunds) == ({"o-1": 1}, {"o-1": 1})
    assert payments.event_types() == [EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_REFUNDED]


@pytest.mark.parametrize("status", ["PENDING", "PAYMENT_PENDING", "PAID"])
@in_a_loop
async def test_an_order_that_is_paid_or_may_still_be_cancels_nothing(status):
    payments = Payments()
    await payments.pay("o-1")
    await payments.unpaid_orders(None, order_status("o-1", status))
    await payments.unpaid_orders(None, order_status("o-2", status))
    assert payments.db.for_order("o-1").status == PaymentStatus.SUCCEEDED
    assert [p.order_id for p in payments.db.tables.payments.values()] == ["o-1"]
    assert payments.unpaid_orders.handled == 0


@in_a_loop
async def test_an_unpaid_orders_event_written_before_orders_sent_the_price_is_not_acted_on():
    payments = Payments()
    await payments.pay("o-1")
    await payments.unpaid_orders(None, order_status("o-1", "CANCELLED", priced=False))
    await payments.unpaid_orders(None, order_status("o-2", "CANCELLED", priced=False))
    assert payments.db.for_order("o-1").status == PaymentStatus.SUCCEEDED
    assert len(payments.db.tables.payments) == 1


# --- blocked users -------------------------------------------------------------------------


@in_a_loop
async def test_a_blocked_user_gets_no_new_payment_but_an_existing_one_is_still_answered():
    payments = Payments()
    paid = await payments.pay("o-1")
    await payments.consume(user_blocked("alice"))
    with pytest.raises(FailedPrecondition, match=USER_BLOCKED_MESSAGE):
        await payments.pay("o-2")
    assert await payments.pay("o-1") == paid
    assert set(payments.provider.charges) == {"o-1"}
    assert [p.order_id for p in payments.db.tables.payments.values()] == ["o-1"]


@in_a_loop
async def test_a_blocked_users_queued_task_is_refused_without_a_charge_and_the_refusal_said():
    payments = Payments()
    await payments.consume(user_blocked("alice"))
    tasks = PaymentTasks(payments.service)
    await tasks(None, payment_task("o-4"))
    assert (tasks.handled, payments.provider.charges) == (1, {})
    (refused,) = payments.db.outbox(Topic.PAYMENT_EVENTS)
    assert (refused.key, refused.type, refused.data["reason"]) == (
        "o-4",
        EventType.PAYMENT_REFUSED,
        USER_BLOCKED_MESSAGE,
    )


@in_a_loop
async def test_a_queued_task_conflicting_with_the_orders_payment_is_refused_not_retried():
    payments = Payments()
    await payments.pay("o-5", amount=1)
    await payments.tasks(None, payment_task("o-5", amount=1500))
    assert payments.tasks.handled == 1
    assert payments.provider.charges == {"o-5": 1}
    refused = payments.db.outbox(Topic.PAYMENT_EVENTS)[-1]
    assert (refused.type, refused.data["amount"]) == (EventType.PAYMENT_REFUSED, 1500)
    assert "different amount" in refused.data["reason"]


@in_a_loop
async def test_user_events_other_than_blocked_change_nothing_and_blocking_twice_is_harmless():
    payments = Payments()
    created = cloud_event(
        source="users", type="shopmesh.user.created.v1", subject="user/bob", data={"userId": "bob"}
    )
    await payments.consume(validate(created))
    assert payments.db.tables.blocked_users == set()
    await payments.consume(user_blocked("bob"))
    await payments.consume(user_blocked("bob"))
    assert payments.db.tables.blocked_users == {"bob"}


# --- reading and watching ------------------------------------------------------------------


@in_a_loop
async def test_a_payment_is_read_by_its_id():
    payments = Payments()
    payment = await payments.pay()
    assert await payments.service.get_payment(str(payment.id)) == payment
    with pytest.raises(NotFound):
        await payments.service.get_payment(str(uuid.uuid4()))
    with pytest.raises(InvalidArgument):
        await payments.service.get_payment("not-a-uuid")


@in_a_loop
async def test_a_users_payments_are_listed_in_pages_oldest_first():
    payments = Payments()
    made = [await payments.pay(f"o-{i}") for i in range(3)]
    await payments.service.process_payment("o-bob", "bob", 100, "RUB")
    first = await payments.service.list_payments("alice", 2, "")
    second = await payments.service.list_payments("alice", 2, first.next_page_token)
    assert first.payments == made[:2] and first.next_page_token
    assert (second.payments, second.next_page_token) == (made[2:], "")
    with pytest.raises(InvalidArgument):
        await payments.service.list_payments("alice", 2, "not a token")


@in_a_loop
async def test_watching_an_order_sees_its_payment_appear_then_settle():
    payments = Payments()

    async def watch() -> list[PaymentStatus]:
        return [p.status async for p in payments.service.watch_payment(order_id="o-5")]

    watcher = asyncio.create_task(watch())
    await let_the_others_run()
    await payments.pay("o-5")
    assert await watcher == [PaymentStatus.PENDING, PaymentStatus.SUCCEEDED]


@in_a_loop
async def test_watching_a_settled_payment_answers_it_once_and_ends():
    payments = Payments()
    payment = await payments.pay()
    watched = [p async for p in payments.service.watch_payment(payment_id=str(payment.id))]
    assert watched == [payment]


@in_a_loop
async def test_watching_an_unknown_payment_is_not_found():
    payments = Payments()
    with pytest.raises(NotFound):
        async for _ in payments.service.watch_payment(payment_id=str(uuid.uuid4())):
            pass
