"""Wiring: the one place that knows the servicer, the workers' handlers, the service layer, the
notification listener and the database, for both process kinds of payments: the gRPC server
(`wiring`) and the payment worker (`worker_wiring`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from contracts import Topic
from services.common.config import ProcessSettings, ServiceSettings
from services.common.grpc_server import GrpcApp, Servicer
from services.common.kafka import Consumer, messaging
from services.common.messaging.migrations import OUTBOX, PROCESSED_EVENTS
from services.common.migrations import ServiceMigrations
from services.common.uow import in_consumer_transaction
from services.payments.api import SERVICE_NAME, PaymentServicer
from services.payments.config import WorkerSettings
from services.payments.notifier import PaymentNotifier
from services.payments.repository import PostgresPaymentsDatabase, PostgresPaymentsUnitOfWork
from services.payments.service import PaymentService, on_user_event
from services.payments.tasks import PaymentTasks, UnpaidOrders
from shopmesh.payments.v1 import payments_pb2_grpc

log = logging.getLogger(__name__)

MIGRATIONS = ServiceMigrations(
    Path(__file__).with_name("migrations"), shared=(OUTBOX, PROCESSED_EVENTS)
)
DRAIN_TIMEOUT_S = 5.0
# The workers' consumer groups: payment-tasks point to point, and order-events for the orders
# that ended unpaid (a group of its own, so a backlog of tasks does not hold a cancellation up).
TASKS_GROUP = "payment-workers"
CANCELLATIONS_GROUP = "payment-cancellations"


@asynccontextmanager
async def wiring(pool: asyncpg.Pool, settings: ServiceSettings) -> AsyncIterator[GrpcApp]:
    async with payment_service(pool, settings) as (service, notifier):
        # The relay publishes PaymentSucceeded / PaymentFailed; user-events fill blocked_users.
        blocked_users = in_consumer_transaction(PostgresPaymentsUnitOfWork, on_user_event)
        kafka = messaging(
            pool,
            settings.instance,
            relay=True,
            consumers=[Consumer((Topic.USER_EVENTS,), "payments", blocked_users)],
        )

        async def on_stop() -> None:
            notifier.close_subscriptions()

        async with kafka:
            try:
                yield GrpcApp(
                    servicers=[
                        Servicer(
                            SERVICE_NAME,
                            PaymentServicer(service),
                            payments_pb2_grpc.add_PaymentServiceServicer_to_server,
                        )
                    ],
                    on_stop=on_stop,
                )
            finally:
                # Charges in flight write their events before the relay stops.
                await service.drain(DRAIN_TIMEOUT_S)


@asynccontextmanager
async def worker_wiring(pool: asyncpg.Pool, settings: WorkerSettings) -> AsyncIterator[None]:
    """A payment worker's consumers and outbox relay, running until the context exits; then
    the consumers finish their messages in flight, the relay its batch, and charges in flight
    are recorded."""
    async with payment_service(pool, settings) as (service, _notifier):
        try:
            async with messaging(
                pool,
                settings.instance,
                relay=True,
                consumers=[
                    Consumer((Topic.PAYMENT_TASKS,), TASKS_GROUP, PaymentTasks(service)),
                    Consumer((Topic.ORDER_EVENTS,), CANCELLATIONS_GROUP, UnpaidOrders(service)),
                ],
                servers=list(settings.kafka_bootstrap),
            ):
                log.info(
                    "payment worker started",
                    extra={
                        "groups": {
                            TASKS_GROUP: Topic.PAYMENT_TASKS,
                            CANCELLATIONS_GROUP: Topic.ORDER_EVENTS,
                        }
                    },
                )
                yield
        finally:
            await service.drain(DRAIN_TIMEOUT_S)


@asynccontextmanager
async def payment_service(
    pool: asyncpg.Pool, settings: ProcessSettings
) -> AsyncIterator[tuple[PaymentService, PaymentNotifier]]:
    """The service layer over the pool, with the process's payment change notifications
    (listening until the context exits)."""
    notifier = PaymentNotifier(settings.database_url)
    await notifier.start()
    try:
        yield (
            PaymentService(PostgresPaymentsDatabase(pool), notifier, instance=settings.instance),
            notifier,
        )
    finally:
        await notifier.stop()
