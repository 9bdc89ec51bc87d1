"""Use cases of the payments service.

ProcessPayment is idempotent by order id. The first call inserts the PENDING payment (claimed
for LEASE_S), charges it with the simulated provider and records the outcome; every other call
for the order finds that row. A call that finds it PENDING waits for the outcome, woken by the
change notification, until shortly before its own deadline (then it returns the PENDING
payment). If the claim has run out (the first caller crashed or stalled), a waiting call takes
the payment over and charges it itself.

A charge runs in its own task: when the caller cancels or its deadline expires, the payment is
still completed, and a stopping process waits for charges in flight.

Cancelling an order's payment (the workers do it when an order ends unpaid) is idempotent by
order id too. With no payment for the order yet it inserts a CANCELLED one, which holds the
order id for good: nothing can charge the order after that. Otherwise it waits for the existing
payment's outcome like a repeated ProcessPayment (taking a stalled charge over, which completes
it) and refunds it if it succeeded. Whichever of a charge and a cancellation commits its row
first, the user is not left charged for an order they do not get.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from contracts import EventType, Topic, payment_outcome, payment_refused
from services.common import pagination
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.common.messaging.envelope import Event
from services.common.uow import Outbox
from services.payments import domain
from services.payments.domain import (
    Outcome,
    Payment,
    PaymentRequest,
    PaymentStatus,
    payment_request,
    valid_key,
)
from services.payments.notifier import Signal, Update

log = logging.getLogger(__name__)

LEASE_S = 5.0
CLAIM_RETRY_S = 1.0
MAX_WAIT_S = 10.0  # how long a call without a deadline waits for another call's outcome
DEADLINE_MARGIN_S = 0.1  # answer this long before the caller's deadline

USER_BLOCKED_MESSAGE = "user is blocked"


class PaymentProvider(Protocol):
    async def charge(self, payment: Payment) -> Outcome:
        """Charge `payment` (its id is the provider's idempotency key); the outcome."""
        ...

    async def refund(self, payment: Payment) -> None:
        """Give a charged `payment` back (idempotent by its id)."""
        ...


class PaymentRepository(Protocol):
    async def insert_pending(self, payment: Payment, *, lease_s: float) -> Payment | None:
        """Insert the PENDING `payment`, claimed for `lease_s`; None if the order has a payment
        (a concurrent insert for the same order waits for the first transaction)."""
        ...

    async def insert_cancelled(self, payment: Payment) -> Payment | None:
        """Insert the CANCELLED `payment`; None if the order has a payment."""
        ...

    async def claim_stalled(self, payment_id: uuid.UUID, *, lease_s: float) -> Payment | None:
        """Claim a PENDING payment whose processing lease has run out; None if it has not."""
        ...

    async def finish(
        self, payment_id: uuid.UUID, outcome: Outcome, *, charged_by: str | None = None
    ) -> Payment | None:
        """Record the provider's outcome on a PENDING payment; None if it is already final."""
        ...

    async def mark_refunded(self, payment_id: uuid.UUID) -> Payment | None:
        """SUCCEEDED becomes REFUNDED; None if the payment is not SUCCEEDED."""
        ...

    async def is_blocked(self, user_id: str) -> bool: ...

    async def block_user(self, user_id: str) -> None: ...

    async def get(self, payment_id: uuid.UUID) -> Payment | None: ...

    async def get_for_order(self, order_id: str) -> Payment | None: ...

    async def list_for_user(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Payment]:
        """Up to `limit` of the user's payments by (created_at, id), strictly after `after`."""
        ...


class PaymentsUnitOfWork(Protocol):
    """One transaction: payments, outbox events and change notifications commit together."""

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    async def notify_changed(self, payment: Payment) -> None:
        """Tell the watchers `payment`'s new state when the unit of work commits."""
        ...


class PaymentsDatabase(Protocol):
    @property
    def payments(self) -> PaymentRepository:
        """Outside any transaction: each call on its own."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[PaymentsUnitOfWork]:
        """A unit of work: committed when the `async with` block ends, rolled back when it
        raises."""
        ...


class Updates(Protocol):
    async def next(self, timeout_s: float | None = None) -> Update | None:
        """The next update, or None if none arrives within `timeout_s`."""
        ...


class PaymentChanges(Protocol):
    """Committed payment changes (services.payments.notifier.PaymentNotifier)."""

    def subscribe(
        self, *, payment_id: uuid.UUID | None = None, order_id: str | None = None
    ) -> AbstractContextManager[Updates]: ...


@dataclass(frozen=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


class PaymentService:
    def __init__(
        self,
        database: PaymentsDatabase,
        notifier: PaymentChanges,
        *,
        instance: str = "",
        provider: PaymentProvider | None = None,
    ) -> None:
        self._db = database
        self._notifier = notifier
        self._provider = provider or domain.SimulatedProvider()
        # Recorded as the payment's charged_by: which process (API server or worker) charged it.
        self.instance = instance
        self._charges: set[asyncio.Task[Payment]] = set()

    async def process_payment(
        self,
        order_id: str,
        user_id: str,
        amount: int,
        currency: str,
        *,
        time_remaining_s: float | None = None,
        own_payment_only: bool = False,
    ) -> Payment:
        """Charge the order once; see the module docstring for repeated and concurrent calls.

        A user blocked (user-events) gets FAILED_PRECONDITION for a new payment; a payment
        that already exists for the order is still reported.

        `own_payment_only`: the caller is the user themselves (not orders, a worker or an
        admin). Payments does not know which orders exist or whose they are, so such a caller
        charges nothing: it is answered the order's payment only if that payment is its own,
        and NOT_FOUND otherwise, the same answer whether the order has no payment or another
        user's (`unknown_order`): nothing tells a user that somebody else's order exists.
        """
        request = payment_request(order_id, user_id, amount, currency)
        if own_payment_only:
            existing = await self._db.payments.get_for_order(request.order_id)
            if existing is None or existing.user_id != request.user_id:
                raise unknown_order(request.order_id)
            return await self._outcome(
                request.order_id, wait_budget(time_remaining_s), expected=request
            )
        payment = domain.new_payment(request)
        async with self._db.transaction() as uow:
            if await uow.payments.is_blocked(request.user_id):
                if await uow.payments.get_for_order(request.order_id) is None:
                    raise FailedPrecondition(USER_BLOCKED_MESSAGE)
                inserted = None
            else:
                inserted = await uow.payments.insert_pending(payment, lease_s=LEASE_S)
            if inserted is not None:
                await uow.notify_changed(inserted)
        if inserted is not None:
            log.info(
                "payment pending",
                extra={"payment_id": str(inserted.id), "order_id": inserted.order_id},
            )
            return await self._charge(inserted)
        return await self._outcome(
            request.order_id, wait_budget(time_remaining_s), expected=request
        )

    async def cancel_payment(
        self,
        order_id: str,
        user_id: str,
        amount: int,
        currency: str,
        *,
        time_remaining_s: float | None = None,
    ) -> Payment:
        """The order ended unpaid: see that it stays uncharged, or refund it; see the module
        docstring. Answers the order's payment: CANCELLED, REFUNDED, DECLINED, or PENDING when
        a charge in flight outlasts the wait."""
        request = payment_request(order_id, user_id, amount, currency)
        async with self._db.transaction() as uow:
            cancelled = await uow.payments.insert_cancelled(domain.cancelled_payment(request))
            if cancelled is not None:
                await uow.notify_changed(cancelled)
        if cancelled is not None:
            log.info(
                "payment cancelled before any charge",
                extra={"payment_id": str(cancelled.id), "order_id": cancelled.order_id},
            )
            return cancelled
        # Whoever paid for the order (even with another amount) is paid back.
        payment = await self._outcome(request.order_id, wait_budget(time_remaining_s))
        if payment.status is PaymentStatus.SUCCEEDED:
            return await self._refund(payment)
        return payment

    async def refuse_payment(
        self, order_id: str, user_id: str, amount: int, currency: str, reason: str
    ) -> None:
        """A queued payment was refused (FailedPrecondition: a blocked user, a conflicting
        payment): say so on payment-events, so that its order ends instead of waiting."""
        event = refused_event(order_id, user_id, amount, currency, reason)
        async with self._db.transaction() as uow:
            await uow.outbox.add(Topic.PAYMENT_EVENTS, order_id, event)
        log.warning(
            "payment refused",
            extra={"order_id": order_id, "reason": reason, "event_id": event["id"]},
        )

    async def get_payment(self, payment_id: str) -> Payment:
        payment = await self._db.payments.get(domain.valid_payment_id(payment_id))
        if payment is None:
            raise NotFound(f"payment {payment_id} not found")
        return payment

    async def list_payments(self, user_id: str, page_size: int, page_token: str) -> PaymentPage:
        valid_key("user_id", user_id)
        size = pagination.page_size(page_size)
        after = None
        if page_token:
            created_at, last_id = pagination.decode_page_token(page_token)
            try:
                after = (created_at, domain.valid_payment_id(last_id))
            except InvalidArgument:
                raise pagination.invalid_page_token() from None
        payments = await self._db.payments.list_for_user(user_id, limit=size + 1, after=after)
        if len(payments) <= size:
            return PaymentPage(payments, "")
        page = payments[:size]
        last = page[-1]
        return PaymentPage(page, pagination.encode_page_token(last.created_at, str(last.id)))

    async def watch_payment(
        self, *, payment_id: str | None = None, order_id: str | None = None
    ) -> AsyncIterator[Payment]:
        """The payment's current state, then each status change, ending after a final status.

        By `order_id` it first waits for the order's payment to appear.
        """
        watched_id, watched_order = watch_key(payment_id, order_id)
        with self._notifier.subscribe(
            payment_id=watched_id, order_id=watched_order
        ) as subscription:
            current = await self._read(watched_id, watched_order)
            if current is None and watched_id is not None:
                raise NotFound(f"payment {payment_id} not found")
            sent = None
            while True:
                if current is not None and current.status is not sent:
                    yield current
                    sent = current.status
                if current is not None and current.status.final:
                    return
                update = await subscription.next()
                if update is Signal.CLOSED:
                    raise Unavailable("the service is shutting down; watch again")
                if isinstance(update, Payment):
                    current = update
                else:
                    current = await self._read(watched_id, watched_order)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the charges in flight to be recorded."""
        if self._charges:
            log.info("waiting for charges in flight", extra={"count": len(self._charges)})
            await asyncio.wait(set(self._charges), timeout=timeout_s)

    async def _outcome(
        self, order_id: str, budget_s: float, *, expected: PaymentRequest | None = None
    ) -> Payment:
        """The order's existing payment once final, taking it over if its charge stalled; as
        it is when `budget_s` runs out. FailedPrecondition if it differs from `expected`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        with self._notifier.subscribe(order_id=order_id) as subscription:
            while True:
                existing = await self._db.payments.get_for_order(order_id)
                if existing is None:
                    raise RuntimeError(f"order {order_id} conflicted but has no payment")
                conflicts = [] if expected is None else expected.conflicts(existing)
                if conflicts:
                    raise FailedPrecondition(
                        f"order {order_id} already has a payment with a different "
                        + " and ".join(conflicts)
                    )
                if existing.status.final:
                    return existing
                claimed = await self._db.payments.claim_stalled(existing.id, lease_s=LEASE_S)
                if claimed is not None:
                    log.warning(
                        "taking over a stalled payment",
                        extra={"payment_id": str(claimed.id), "order_id": claimed.order_id},
                    )
                    return await self._charge(claimed)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return existing
                update = await subscription.next(min(remaining, CLAIM_RETRY_S))
                if update is Signal.CLOSED:
                    return existing

    async def _charge(self, payment: Payment) -> Payment:
        task = asyncio.create_task(self._charge_and_record(payment))
        self._charges.add(task)
        task.add_done_callback(self._charge_done)
        return await asyncio.shield(task)

    def _charge_done(self, task: asyncio.Task[Payment]) -> None:
        self._charges.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "charge not recorded; the payment stays PENDING until it is taken over",
                extra={"error": f"{type(task.exception()).__name__}: {task.exception()}"},
            )

    async def _charge_and_record(self, payment: Payment) -> Payment:
        outcome = await self._provider.charge(payment)
        async with self._db.transaction() as uow:
            finished = await uow.payments.finish(
                payment.id, outcome, charged_by=self.instance or None
            )
            if finished is not None:
                await uow.notify_changed(finished)
                await payment_finished(uow.outbox, finished)
        if finished is None:
            current = await self._db.payments.get(payment.id)
            if current is None:
                raise RuntimeError(f"payment {payment.id} disappeared")
            return current
        return finished

    async def _refund(self, payment: Payment) -> Payment:
        await self._provider.refund(payment)
        async with self._db.transaction() as uow:
            refunded = await uow.payments.mark_refunded(payment.id)
            if refunded is not None:
                await uow.notify_changed(refunded)
                await payment_finished(uow.outbox, refunded)
        if refunded is None:  # a concurrent cancellation recorded the refund
            current = await self._db.payments.get(payment.id)
            if current is None:
                raise RuntimeError(f"payment {payment.id} disappeared")
            return current
        return refunded

    async def _read(self, payment_id: uuid.UUID | None, order_id: str | None) -> Payment | None:
        if payment_id is not None:
            return await self._db.payments.get(payment_id)
        return await self._db.payments.get_for_order(order_id or "")


def unknown_order(order_id: str) -> NotFound:
    """What a user is told about an order that is not theirs to pay: the same whether it does
    not exist or is somebody else's."""
    return NotFound(f"order {order_id} not found")


OUTCOME_EVENTS = {
    PaymentStatus.SUCCEEDED: EventType.PAYMENT_SUCCEEDED,
    PaymentStatus.DECLINED: EventType.PAYMENT_FAILED,
    PaymentStatus.REFUNDED: EventType.PAYMENT_REFUNDED,
}


def payment_event(payment: Payment) -> dict[str, Any]:
    """PaymentSucceeded, PaymentFailed (a DECLINED payment) or PaymentRefunded. PENDING has no
    outcome yet, and a CANCELLED payment moved no money: neither has an event."""
    kind = OUTCOME_EVENTS.get(payment.status)
    if kind is None:
        raise ValueError(f"a {payment.status.value} payment has no outcome event")
    return payment_outcome(
        kind,
        order_id=payment.order_id,
        payment_id=str(payment.id),
        user_id=payment.user_id,
        amount=payment.amount,
        currency=payment.currency,
        status=payment.status.value,
        decline_reason=payment.decline_reason,
    )


def refused_event(
    order_id: str, user_id: str, amount: int, currency: str, reason: str
) -> dict[str, Any]:
    """PaymentRefused: payments will not make the payment asked for; no payment was made."""
    return payment_refused(
        order_id=order_id, user_id=user_id, amount=amount, currency=currency, reason=reason
    )


async def payment_finished(outbox: Outbox, payment: Payment) -> None:
    """A payment reached its final status (or was refunded), inside the unit of work that
    recorded it.

    Its PaymentSucceeded / PaymentFailed / PaymentRefunded event goes to the unit of work's
    outbox, keyed by the order id, so it commits with the status. `PaymentRepository.finish`
    changes a PENDING payment only and `mark_refunded` a SUCCEEDED one, so this runs once per
    outcome whoever charged or refunded it (API server, worker, a repeated call).
    """
    event = payment_event(payment)
    await outbox.add(Topic.PAYMENT_EVENTS, payment.order_id, event)
    log.info(
        f"payment {payment.status.value.lower()}",
        extra={
            "payment_id": str(payment.id),
            "order_id": payment.order_id,
            "amount": payment.amount,
            "currency": payment.currency,
            "decline_reason": payment.decline_reason,
            "event_id": event["id"],
        },
    )


async def on_user_event(uow: PaymentsUnitOfWork, event: Event) -> None:
    """Consumer group `payments` on user-events, in the unit of work of the consumer's
    transaction: remember blocked users."""
    if event.type != EventType.USER_BLOCKED:
        return
    user_id = event.data["userId"]
    await uow.payments.block_user(user_id)
    log.info("user blocked: new payments refused", extra={"user_id": user_id})


def watch_key(payment_id: str | None, order_id: str | None) -> tuple[uuid.UUID | None, str | None]:
    if payment_id is not None:
        return domain.valid_payment_id(payment_id), None
    if order_id is not None:
        return None, valid_key("order_id", order_id)
    raise InvalidArgument("payment_id", "or order_id is required")


def wait_budget(time_remaining_s: float | None) -> float:
    if time_remaining_s is None:
        return MAX_WAIT_S
    return max(0.0, min(time_remaining_s - DEADLINE_MARGIN_S, MAX_WAIT_S))
