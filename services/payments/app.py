"""Wiring: the one place that knows the servicer, the service layer, the notification
listener and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from services.common.config import ServiceSettings
from services.common.grpc_server import GrpcApp, Servicer
from services.payments.api import SERVICE_NAME, PaymentServicer
from services.payments.notifier import PaymentNotifier
from services.payments.service import PaymentService
from shopmesh.payments.v1 import payments_pb2_grpc

MIGRATIONS = Path(__file__).with_name("migrations")
DRAIN_TIMEOUT_S = 5.0


@asynccontextmanager
async def wiring(pool: asyncpg.Pool, settings: ServiceSettings) -> AsyncIterator[GrpcApp]:
    notifier = PaymentNotifier(settings.database_url)
    await notifier.start()
    service = PaymentService(pool, notifier)

    async def on_stop() -> None:
        notifier.close_subscriptions()

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
        await service.drain(DRAIN_TIMEOUT_S)
        await notifier.stop()
