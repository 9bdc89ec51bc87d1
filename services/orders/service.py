"""Use cases of the orders service."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from contracts import (
    EventType,
    Topic,
    order_status_changed,
    payment_requested,
)
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.messaging.envelope import Event
from services.common.telemetry import set_order_id
from services.common.uow import Outbox
from services.orders.clients import (
    PaymentOutcome,
    PaymentRefused,
    PaymentResult,
    UnknownUser,
    UpstreamFailed,
    UpstreamUnavailable,
    UserInfo,
)
from services.orders.domain import (
    TRANSITIONS,
    IdempotencyRecord,
    InvalidTransition,
    Order,
    OrderItem,
    OrderStatus,
    new_order,
    sources_of,
)

# How long the payment task of an order charged synchronously is held back: longer than the
# synchronous attempt (payments' whole budget, then the status's transaction) takes on a busy
# machine, so that the attempt settles the order and withdraws the task first. Should this
# process die before that, a worker charges the order once the time is up.
PAYMENT_TASK_HOLD_S = 10.0

# The statuses a blocked user's orders are cancelled from.
CANCELLED_WHEN_BLOCKED = (OrderStatus.PENDING, OrderStatus.PAYMENT_PENDING)

log = logging.getLogger(__name__)


class IdempotencyKeyReusedError(FailedPrecondition):
    """The Idempotency-Key was already used for a request with a different body."""

    def __init__(self, key: str) -> None:
        super().__init__("this Idempotency-Key was already used with a different request body")
        self.key = key


class UnknownUserError(InvalidArgument):
    """The order is for a user that users does not know."""

    def __init__(self, user_id: str) -> None:
        super().__init__("userId", "no such user", detail=f"no user has the id {user_id!r}")


class UserBlockedError(PermissionDenied):
    """The user exists but is blocked: no new orders."""

    def __init__(self, user_id: str) -> None:
        super().__init__("this user is blocked and cannot place orders")
        self.user_id = user_id


class OrderNotFound(NotFound):
    """No order has the id, or none the caller may see."""

    def __init__(self) -> None:
        super().__init__("no order has this id")


class OrderNotCancellable(FailedPrecondition):
    """The order is settled (or became so meanwhile): cancelling it is too late."""

    def __init__(self, status: OrderStatus) -> None:
        super().__init__(
            f"the order is {status.value}; only PENDING or PAYMENT_PENDING orders can be cancelled"
        )
        self.status = status


class OrderRepository(Protocol):
    async def add(self, order: Order) -> None: ...

    async def get(self, order_id: uuid.UUID) -> Order | None: ...

    async def list_for_user(self, user_id: str) -> list[Order]:
        """Oldest first."""
        ...

    async def update_status(self, order: Order, expected: list[OrderStatus]) -> Order | None:
        """Write `order`'s status if the stored one is still in `expected`; None if it moved on."""
        ...

    async def claim_idempotency_key(self, key: str, request_hash: str, order_id: uuid.UUID) -> bool:
        """Record `key` for `order_id`; False if the key already exists (a concurrent claim
        of the same key waits for the first transaction and then sees its key)."""
        ...

    async def find_idempotency_key(self, key: str) -> IdempotencyRecord | None: ...


class OrdersUnitOfWork(Protocol):
    """One transaction: the orders and the outbox events written through it commit together."""

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def outbox(self) -> Outbox: ...


class OrdersDatabase(Protocol):
    @property
    def orders(self) -> OrderRepository:
        """Outside any transaction: each call on its own."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[OrdersUnitOfWork]:
        """A unit of work: committed when the `async with` block ends, rolled back when it
        raises."""
        ...


class Users(Protocol):
    async def get_user(self, user_id: str) -> UserInfo: ...


class Payments(Protocol):
    async def process_payment(
        self, order_id: uuid.UUID, user_id: str, amount: int, currency: str
    ) -> PaymentOutcome: ...


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    replayed: bool


def status_changed_event(order: Order) -> dict[str, Any]:
    return order_status_changed(
        order_id=str(order.id),
        user_id=order.user_id,
        status=order.status.value,
        total_price=order.total_price,
        currency=order.currency,
        status_reason=order.status_reason,
        payment_id=order.payment_id,
    )


def payment_requested_event(order: Order) -> dict[str, Any]:
    return payment_requested(
        order_id=str(order.id),
        user_id=order.user_id,
        amount=order.total_price,
        currency=order.currency,
    )


async def request_payment(outbox: Outbox, order: Order, *, hold_s: float | None = None) -> None:
    """The order's PaymentRequested task for the payment workers (payment-tasks, keyed by the
    order id), in the unit of work that stores the order; with `hold_s`, held back that long
    (see `follow_payment_task`)."""
    event = payment_requested_event(order)
    await outbox.add(Topic.PAYMENT_TASKS, str(order.id), event, hold_s=hold_s)
    log.info("payment queued", extra={"order_id": str(order.id), "event_id": event["id"]})


async def follow_payment_task(outbox: Outbox, order: Order) -> None:
    """In the unit of work of the order's new status: a task still held back is withdrawn once
    the order is final (a worker would only find it settled) and published at once when the
    order waits for a worker (PAYMENT_PENDING). A task already published is left as it is."""
    if order.status == OrderStatus.PAYMENT_PENDING:
        await outbox.release(Topic.PAYMENT_TASKS, str(order.id))
    elif not TRANSITIONS[order.status]:
        await outbox.withdraw(Topic.PAYMENT_TASKS, str(order.id))


async def status_changed(outbox: Outbox, order: Order) -> None:
    """An order's status changed, in the unit of work that changed it: its event goes to
    order-events via the outbox (after the order row's update, so per-order order holds)."""
    await outbox.add(Topic.ORDER_EVENTS, str(order.id), status_changed_event(order))
    log.info(
        "order status changed", extra={"order_id": str(order.id), "status": order.status.value}
    )


def request_hash(user_id: str, items: Sequence[OrderItem]) -> str:
    """A fingerprint of an order request, independent of JSON formatting and key order."""
    canonical = json.dumps(
        {"userId": user_id, "items": [item.to_json() for item in items]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderService:
    def __init__(
        self,
        database: OrdersDatabase,
        users: Users,
        payments: Payments,
    ) -> None:
        self._db = database
        self._users = users
        self._payments = payments

    async def place_order(
        self,
        user_id: str,
        items: Sequence[OrderItem],
        *,
        idempotency_key: str | None = None,
        respond_async: bool = False,
    ) -> PlacedOrder:
        """Store a new order, or return the one an earlier request with the same key created.

        The key claim, the order and its PaymentRequested task are written in one transaction;
        a concurrent request with the same key waits on the key's unique constraint and then
        replays the winner's order. The queued task is what guarantees the payment: if this
        process stops or fails before the synchronous attempt settles the order, a payment
        worker charges it, and payments' idempotency by order id makes the two paths charge
        once. The task is held back for PAYMENT_TASK_HOLD_S and withdrawn when the attempt
        settles the order (`follow_payment_task`), so an order paid at once costs no worker
        and no Kafka message for it. With `respond_async` the synchronous attempt is skipped,
        the order is stored as PAYMENT_PENDING and its task is published at once.
        """
        order = new_order(user_id, items)
        if respond_async:
            order = order.moved_to(OrderStatus.PAYMENT_PENDING, reason="payment queued")
        fingerprint = request_hash(user_id, order.items)
        if idempotency_key is not None and await self._db.orders.find_idempotency_key(
            idempotency_key
        ):
            replayed = await self._replay(self._db.orders, idempotency_key, fingerprint)
            return PlacedOrder(replayed, replayed=True)
        await self._active_user(user_id)
        async with self._db.transaction() as uow:
            if idempotency_key is not None and not await uow.orders.claim_idempotency_key(
                idempotency_key, fingerprint, order.id
            ):
                return PlacedOrder(
                    await self._replay(uow.orders, idempotency_key, fingerprint), replayed=True
                )
            await uow.orders.add(order)
            if respond_async:
                await status_changed(uow.outbox, order)
            hold_s = None if respond_async else PAYMENT_TASK_HOLD_S
            await request_payment(uow.outbox, order, hold_s=hold_s)
        log.info(
            "order created",
            extra={
                "order_id": str(order.id),
                "user_id": order.user_id,
                "total_price": order.total_price,
                "currency": order.currency,
                "status": order.status.value,
            },
        )
        if respond_async:
            return PlacedOrder(order, replayed=False)
        return PlacedOrder(await self._settle_payment(order), replayed=False)

    async def _active_user(self, user_id: str) -> None:
        """UnknownUserError, UserBlockedError, or Unavailable while users cannot say: then
        nothing is stored."""
        try:
            user = await self._users.get_user(user_id)
        except UnknownUser:
            raise UnknownUserError(user_id) from None
        except UpstreamUnavailable as exc:
            raise Unavailable(
                f"{exc.service} did not answer in time; nothing was stored, retry later"
            ) from exc
        if user.blocked:
            raise UserBlockedError(user_id)

    async def get_order(self, order_id: uuid.UUID) -> Order | None:
        return await self._db.orders.get(order_id)

    async def list_orders(self, user_id: str) -> list[Order]:
        return await self._db.orders.list_for_user(user_id)

    async def _replay(
        self, orders: OrderRepository, idempotency_key: str, fingerprint: str
    ) -> Order:
        record = await orders.find_idempotency_key(idempotency_key)
        if record is None:
            raise RuntimeError("an idempotency key that could not be claimed is missing")
        if record.request_hash != fingerprint:
            raise IdempotencyKeyReusedError(idempotency_key)
        order = await orders.get(record.order_id)
        if order is None:
            raise RuntimeError(f"idempotency key refers to missing order {record.order_id}")
        log.info("order replayed for idempotency key", extra={"order_id": str(order.id)})
        return order

    async def cancel_order(self, order_id: uuid.UUID) -> Order | None:
        """Cancel an order that is not settled yet; OrderNotCancellable (an InvalidTransition)
        once it is paid or failed. A concurrent transition that wins is the order returned."""
        order = await self._db.orders.get(order_id)
        if order is None or order.status == OrderStatus.CANCELLED:
            return order
        try:
            return await self._move(order, OrderStatus.CANCELLED)
        except InvalidTransition as exc:
            raise OrderNotCancellable(exc.current) from None

    async def _settle_payment(self, order: Order) -> Order:
        """Charge the order synchronously. If payments cannot answer, the order waits for its
        queued task (PAYMENT_PENDING); if payments refuses the payment, the order fails."""
        try:
            outcome = await self._payments.process_payment(
                order.id, order.user_id, order.total_price, order.currency
            )
        except UpstreamUnavailable as exc:
            log.warning(
                "payment deferred",
                extra={"order_id": str(order.id), "code": exc.code.name, "error": str(exc)},
            )
            return await self._defer(order, f"payments unavailable ({exc.code.name})")
        except PaymentRefused as exc:
            log.warning(
                "payment refused",
                extra={"order_id": str(order.id), "code": exc.code.name, "reason": exc.reason},
            )
            return await self._move(order, OrderStatus.FAILED, reason=refused_reason(exc.reason))
        except UpstreamFailed as exc:
            # Not the order's fault and no answer about its payment: the queue still pays it.
            log.error(
                "payment attempt failed; deferred",
                extra={"order_id": str(order.id), "code": exc.code.name, "error": str(exc)},
            )
            return await self._defer(order, f"payment attempt failed ({exc.code.name})")
        if outcome.result == PaymentResult.SUCCEEDED:
            return await self._move(order, OrderStatus.PAID, payment_id=outcome.payment_id)
        if outcome.result == PaymentResult.DECLINED:
            return await self._move(
                order,
                OrderStatus.FAILED,
                payment_id=outcome.payment_id,
                reason=outcome.decline_reason,
            )
        if outcome.result == PaymentResult.CANCELLED:
            # Only an order that ended unpaid has its payment cancelled: this one already has.
            return await self._move(order, OrderStatus.CANCELLED, reason="payment cancelled")
        return await self._defer(order, "payment still processing")

    async def _defer(self, order: Order, reason: str) -> Order:
        """PAYMENT_PENDING: the payment task queued with the order pays it."""
        return await self._move(order, OrderStatus.PAYMENT_PENDING, reason=reason)

    async def _move(
        self,
        order: Order,
        status: OrderStatus,
        *,
        payment_id: str | None = None,
        reason: str | None = None,
    ) -> Order:
        """Apply a transition unless a concurrent one (a cancel, a payment event) got there
        first; the status and its order-events event are written in one unit of work."""
        wanted = order.moved_to(status, payment_id=payment_id, reason=reason)
        async with self._db.transaction() as uow:
            stored = await uow.orders.update_status(wanted, sources_of(status))
            if stored is not None:
                await status_changed(uow.outbox, stored)
                await follow_payment_task(uow.outbox, stored)
        if stored is not None:
            return stored
        current = await self._db.orders.get(order.id)
        if current is None:
            raise RuntimeError(f"order {order.id} vanished during a status change")
        return current


async def on_event(uow: OrdersUnitOfWork, event: Event) -> None:
    """Consumer group `orders` on user-events and payment-events, in the unit of work of the
    consumer's transaction (which also records the event in processed_events: each effect
    happens once)."""
    if event.type == EventType.USER_BLOCKED:
        await cancel_orders_of_blocked_user(uow, event.data["userId"])
    elif event.type in (
        EventType.PAYMENT_SUCCEEDED,
        EventType.PAYMENT_FAILED,
        EventType.PAYMENT_REFUSED,
    ):
        await complete_payment(uow, event)


async def cancel_orders_of_blocked_user(uow: OrdersUnitOfWork, user_id: str) -> list[Order]:
    """Cancel the user's PENDING and PAYMENT_PENDING orders; the orders cancelled."""
    cancelled = []
    for order in await uow.orders.list_for_user(user_id):
        if order.status not in CANCELLED_WHEN_BLOCKED:
            continue
        wanted = order.moved_to(OrderStatus.CANCELLED, reason="user blocked")
        stored = await uow.orders.update_status(wanted, list(CANCELLED_WHEN_BLOCKED))
        if stored is not None:
            await status_changed(uow.outbox, stored)
            await follow_payment_task(uow.outbox, stored)
            cancelled.append(stored)
    log.info(
        "blocked user's orders cancelled", extra={"user_id": user_id, "cancelled": len(cancelled)}
    )
    return cancelled


def is_for(order: Order, payment: Mapping[str, Any]) -> bool:
    """Whether a payment event's payment is the one the order asks for. Anyone allowed to call
    ProcessPayment can pay an order's id with another user, amount or currency; that payment
    does not pay for the order, and the order's own payment is then refused as a conflict."""
    asked = (order.user_id, order.total_price, order.currency)
    return (payment.get("userId"), payment.get("amount"), payment.get("currency")) == asked


def refused_reason(reason: str) -> str:
    return f"payment refused: {reason}"


def outcome_reason(event: Event) -> str | None:
    """Why a payment event leaves its order where it does; None for a payment that succeeded."""
    if event.type == EventType.PAYMENT_SUCCEEDED:
        return None
    if event.type == EventType.PAYMENT_REFUSED:
        return refused_reason(event.data.get("reason") or "no reason given")
    return event.data.get("declineReason") or "payment failed"


async def complete_payment(uow: OrdersUnitOfWork, event: Event) -> Order | None:
    """PaymentSucceeded / PaymentFailed / PaymentRefused: PAYMENT_PENDING (or PENDING) becomes
    PAID / FAILED / FAILED.

    An order already final (paid by the synchronous path, cancelled) is left as it is, and so
    is an order the event's payment is not for (see `is_for`).
    """
    data = event.data
    try:
        order_id = uuid.UUID(data["orderId"])
    except ValueError:
        log.warning(
            "payment event for a non-order id; ignored", extra={"order_id": data["orderId"]}
        )
        return None
    set_order_id(order_id)
    order = await uow.orders.get(order_id)
    if order is None:
        log.warning(
            "payment event for an unknown order; ignored", extra={"order_id": str(order_id)}
        )
        return None
    if not is_for(order, data):
        log.warning(
            "payment event for another user, amount or currency than the order's; ignored",
            extra={"order_id": str(order_id), "event_id": str(event.id)},
        )
        return None
    succeeded = event.type == EventType.PAYMENT_SUCCEEDED
    status = OrderStatus.PAID if succeeded else OrderStatus.FAILED
    if order.status not in sources_of(status):
        log.info(
            "payment outcome for a settled order; nothing to do",
            extra={"order_id": str(order_id), "status": order.status.value},
        )
        return None
    wanted = order.moved_to(status, payment_id=data.get("paymentId"), reason=outcome_reason(event))
    stored = await uow.orders.update_status(wanted, sources_of(status))
    if stored is not None:
        await status_changed(uow.outbox, stored)
        await follow_payment_task(uow.outbox, stored)
    return stored
