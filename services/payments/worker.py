"""python -m services.payments.worker: a payment worker (consumer group `payment-workers`).

Workers take PaymentRequested tasks from `payment-tasks` (point-to-point: each task goes to one
worker of the group; partitions are the unit of parallelism) and charge them through the
payments service layer on the payments database, the same idempotent path as the gRPC
ProcessPayment: the order id is the payment's unique key, so a task and a synchronous call, or
a task delivered twice, never charge twice. The outcome event (PaymentSucceeded /
PaymentFailed) is written to the payments outbox with the payment's final status; the worker
runs an outbox relay too (one relay publishes at a time per database), so outcomes reach
payment-events even while the payments API servers are down. A payment the service refuses
(FailedPrecondition: a blocked user, a conflicting payment) is a PaymentRefused event, not a
task to retry: its order fails.

Workers also read orders' status changes (order-events) as the consumer group
`payment-cancellations`: an order that ended unpaid (CANCELLED, FAILED) has its payment
cancelled through the service's cancel_payment, so it is never charged after that, and a charge
that raced its end is refunded. A group of its own, apart from payment-tasks: a backlog of tasks
does not hold a cancellation up, so a cancellation usually reaches an order before the order's
PaymentRequested does.

A worker serves nothing and registers nowhere: no port, no sidecar, no upstreams. It reads
SHOPMESH_SERVICE, SHOPMESH_INSTANCE, SHOPMESH_DATABASE_URL, SHOPMESH_KAFKA_BOOTSTRAP and
optionally SHOPMESH_CONSUL_HTTP_ADDR and SHOPMESH_LOG_LEVEL. SIGTERM/SIGINT stop it
gracefully: the task in flight finishes and its offset is committed, the relay publishes its
batch, charges in flight are recorded. Exit code 2 for a configuration error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg

from services.common import event_loop
from services.common.config import LOG_LEVELS, ConfigError
from services.common.contracts import EventType, Topic
from services.common.db import apply_migrations, close_pool, create_pool
from services.common.errors import FailedPrecondition
from services.common.kafka import Consumer, messaging
from services.common.logging import configure_logging
from services.common.messaging.envelope import Event
from services.common.messaging.producer import bootstrap_servers
from services.common.metrics import serve_metrics
from services.common.runner import stop_on_signals, unless_stopped
from services.common.telemetry import set_order_id, setup
from services.payments.app import DRAIN_TIMEOUT_S, MIGRATIONS
from services.payments.domain import Payment
from services.payments.notifier import PaymentNotifier
from services.payments.repository import PostgresPaymentsDatabase
from services.payments.service import PaymentService

log = logging.getLogger(__name__)

GROUP = "payment-workers"
CANCELLATIONS_GROUP = "payment-cancellations"
# Final statuses of an order nobody paid for: no payment may stand for it.
ENDED_UNPAID = frozenset({"CANCELLED", "FAILED"})
# How long one delivery of a task waits for a charge another process has in flight (its
# lease then runs out and this worker takes the payment over); then the attempt fails and
# the consumer retries it.
TASK_BUDGET_S = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    service: str
    instance: str
    database_url: str = field(repr=False)
    kafka_bootstrap: tuple[str, ...]
    consul_http_addr: str | None = None
    log_level: str = "info"
    # Where /metrics is served for Prometheus (SHOPMESH_BIND_HOST:SHOPMESH_METRICS_PORT).
    bind_host: str = "127.0.0.1"
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """The worker's settings; ConfigError naming the first missing or malformed variable."""
        source = os.environ if env is None else env

        def required(name: str) -> str:
            value = source.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is required but not set")
            return value

        log_level = (source.get("SHOPMESH_LOG_LEVEL", "").strip() or "info").lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(
                f"SHOPMESH_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        consul = source.get("SHOPMESH_CONSUL_HTTP_ADDR", "").strip().rstrip("/") or None
        if consul is not None and not consul.startswith(("http://", "https://")):
            raise ConfigError(
                f"SHOPMESH_CONSUL_HTTP_ADDR must be an http:// or https:// URL, got {consul!r}"
            )
        metrics_port = source.get("SHOPMESH_METRICS_PORT", "").strip()
        if metrics_port and not (metrics_port.isascii() and metrics_port.isdigit()):
            raise ConfigError(f"SHOPMESH_METRICS_PORT must be a port number, got {metrics_port!r}")
        return cls(
            service=required("SHOPMESH_SERVICE"),
            instance=required("SHOPMESH_INSTANCE"),
            database_url=required("SHOPMESH_DATABASE_URL"),
            kafka_bootstrap=tuple(bootstrap_servers(source)),
            consul_http_addr=consul,
            log_level=log_level,
            bind_host=source.get("SHOPMESH_BIND_HOST", "").strip() or "127.0.0.1",
            metrics_port=int(metrics_port) if metrics_port else None,
        )


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

    async def __call__(self, _conn: asyncpg.Connection, event: Event) -> None:
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

    async def __call__(self, _conn: asyncpg.Connection, event: Event) -> None:
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


async def run(settings: WorkerSettings) -> int:
    stop = stop_on_signals()
    pool: asyncpg.Pool | None = None

    async def startup() -> None:
        nonlocal pool
        pool = await create_pool(settings.database_url)
        await apply_migrations(pool, MIGRATIONS)

    try:
        if not await unless_stopped(startup(), stop):
            return 0
    except Exception:
        log.exception("startup failed")
        if pool is not None:
            await close_pool(pool)
        return 1
    assert pool is not None
    serve_metrics(settings.bind_host, settings.metrics_port)
    notifier = PaymentNotifier(settings.database_url)
    await notifier.start()
    service = PaymentService(PostgresPaymentsDatabase(pool), notifier, instance=settings.instance)
    try:
        async with messaging(
            pool,
            settings.instance,
            relay=True,
            consumers=[
                Consumer((Topic.PAYMENT_TASKS,), GROUP, PaymentTasks(service)),
                Consumer((Topic.ORDER_EVENTS,), CANCELLATIONS_GROUP, UnpaidOrders(service)),
            ],
            servers=list(settings.kafka_bootstrap),
        ):
            log.info(
                "payment worker started",
                extra={
                    "groups": {GROUP: Topic.PAYMENT_TASKS, CANCELLATIONS_GROUP: Topic.ORDER_EVENTS}
                },
            )
            await stop.wait()
            log.info("stopping")
    finally:
        await service.drain(DRAIN_TIMEOUT_S)
        notifier.close_subscriptions()
        await notifier.stop()
        await close_pool(pool)
    log.info("stopped")
    return 0


def main() -> int:
    try:
        settings = WorkerSettings.from_env()
    except ConfigError as exc:
        print(f"payments-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.instance, settings.log_level)
    telemetry = setup(settings.service, settings.instance)
    try:
        return event_loop.run(run(settings))
    except KeyboardInterrupt:
        return 0
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
