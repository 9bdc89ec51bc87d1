"""The payment workers' Kafka entrypoints: the handlers of their two consumer groups.

`PaymentTasks` takes PaymentRequested tasks from `payment-tasks` (point-to-point: each task goes
to one worker of the group; partitions are the unit of parallelism) and charges them through
the payments service layer on the payments database, the same idempotent path as the gRPC
ProcessPayment: the order id is the payment's unique key, so a task and a synchronous call, or
a task delivered twice, never charge twice. The outcome event (PaymentSucceeded /
PaymentFailed) is written to the payments outbox with the payment's final status. A payment the
service refuses (FailedPrecondition: a blocked user, a conflicting payment) is a PaymentRefused
event, not a task to retry: its order fails.

`UnpaidOrders` reads orders' status changes (order-events): an order that ended unpaid
(CANCELLED, FAILED) has its payment cancelled through the service's cancel_payment, so it is
never charged after that, and a charge that raced its end is refunded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from contracts import EventType
from services.common.db import Connection
from services.common.errors import FailedPrecondition
from services.common.messaging.envelope import Event
from services.common.telemetry import set_order_id
from services.payments.domain import Payment
from services.payments.service import PaymentService

log = logging.getLogger(__name__)

# Final statuses of an order nobody paid for: no payment may stand for it.
ENDED_UNPAID = frozenset({"CANCELLED", "FAILED"})
# How long one delivery of a task waits for a charge another process has in flight (its
# lease then runs out and this worker takes the payment over); then the attempt fails and
# the consumer retries it.
TASK_BUDGET_S = 30.0


class TaskNotFinished(Exception):
    """The order's payment is still PENDING after the task's budget (retried by the consumer)."""


async def until_final(
    attempt: Callable[[float], Awaitable[Payment]], order_id: str, budget_s: float
) -> Payment:
    """`attempt(time_remaining_s)` until the order's payment is final, within `budget_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while True:
        payment = await attempt(max(deadline - loop.time(), 0.0))
        if payment.status.final:
            return payment
        if loop.time() >= deadline:
            raise TaskNotFinished(f"the payment of order {order_id} is still PENDING")


class PaymentTasks:
    """The handler of payment-tasks: charge the requested order once, log the outcome."""

    def __init__(self, service: PaymentService, *, budget_s: float = TASK_BUDGET_S) -> None:
        self._service = service
        self._budget_s = budget_s
        self.handled = 0

    async def __call__(self, _conn: Connection, event: Event) -> None:
        if event.type != EventType.PAYMENT_REQUESTED:
            log.warning("not a payment task; ignored", extra={"event_type": event.type})
            return
        data = event.data
        order_id = data["orderId"]
        set_order_id(order_id)
        extra = {"order_id": order_id, "user_id": data["userId"], "event_id": str(event.id)}
        log.info("payment task received", extra=extra)
        try:
            payment = await until_final(
                lambda remaining: self._service.process_payment(
                    order_id,
                    data["userId"],
                    data["amount"],
                    data["currency"],
                    time_remaining_s=remaining,
                ),
                order_id,
                self._budget_s,
            )
        except FailedPrecondition as exc:
            await self._service.refuse_payment(
                order_id, data["userId"], data["amount"], data["currency"], str(exc)
            )
            self.handled += 1
            return
        self.handled += 1
        log.info(
            "payment task done",
            extra=extra
            | {
                "payment_id": str(payment.id),
                "status": payment.status.value,
                "tasks_handled": self.handled,
            },
        )


class UnpaidOrders:
    """The handler of order-events for the group `payment-cancellations`: the payment of an
    order that ended unpaid is cancelled (see the module docstring)."""

    def __init__(self, service: PaymentService, *, budget_s: float = TASK_BUDGET_S) -> None:
        self._service = service
        self._budget_s = budget_s
        self.handled = 0

    async def __call__(self, _conn: Connection, event: Event) -> None:
        data = event.data
        if event.type != EventType.ORDER_STATUS_CHANGED or data.get("status") not in ENDED_UNPAID:
            return
        order_id = data["orderId"]
        set_order_id(order_id)
        extra = {"order_id": order_id, "order_status": data["status"], "event_id": str(event.id)}
        if "totalPrice" not in data or "currency" not in data:
            # Written before orders put the price in its status changes: this group reads the
            # topic from its start the first time it runs.
            log.warning("an unpaid order's event without its price; not acted on", extra=extra)
            return
        payment = await until_final(
            lambda remaining: self._service.cancel_payment(
                order_id,
                data["userId"],
                data["totalPrice"],
                data["currency"],
                time_remaining_s=remaining,
            ),
            order_id,
            self._budget_s,
        )
        self.handled += 1
        log.info(
            "unpaid order's payment cancelled",
            extra=extra | {"payment_id": str(payment.id), "status": payment.status.value},
        )
