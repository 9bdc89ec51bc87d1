"""Wiring: the one place that knows the servicer, the service layer, the notification
listener and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from services.common.config import ServiceSettings
from services.common.contracts import Topic
from services.common.grpc_server import GrpcApp, Servicer
from services.common.kafka import Consumer, messaging
from services.common.uow import in_consumer_transaction
from services.payments.api import SERVICE_NAME, PaymentServicer
from services.payments.notifier import PaymentNotifier
from services.payments.repository import PostgresPaymentsDatabase, PostgresPaymentsUnitOfWork
from services.payments.service import PaymentService, on_user_event
from shopmesh.payments.v1 import payments_pb2_grpc

MIGRATIONS = Path(__file__).with_name("migrations")
DRAIN_TIMEOUT_S = 5.0


@asynccontextmanager
async def wiring(pool: asyncpg.Pool, settings: ServiceSettings) -> AsyncIterator[GrpcApp]:
    notifier = PaymentNotifier(settings.database_url)
    await notifier.start()
    service = PaymentService(PostgresPaymentsDatabase(pool), notifier, instance=settings.instance)
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

    try:
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
    finally:
        await notifier.stop()
