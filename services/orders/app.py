"""Wiring: the one place that knows the routes, the error handling and the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from contracts import Topic
from services.common.auth.middleware import install_internal_auth
from services.common.config import ServiceSettings
from services.common.db import create_pool
from services.common.faults import install_fault_flags
from services.common.kafka import Consumer, messaging
from services.common.messaging.migrations import OUTBOX, PROCESSED_EVENTS
from services.common.migrations import ServiceMigrations, apply_migrations
from services.common.rest import rest_app
from services.common.uow import in_consumer_transaction
from services.orders import api
from services.orders.clients import PaymentsClient, UsersClient
from services.orders.repository import PostgresOrdersDatabase, PostgresOrdersUnitOfWork
from services.orders.service import OrderService, on_event

MAX_BODY_BYTES = 64 * 1024
MIGRATIONS = ServiceMigrations(
    Path(__file__).with_name("migrations"), shared=(OUTBOX, PROCESSED_EVENTS)
)


def http_app() -> web.Application:
    """Routes and error handling without a database; `api.SERVICE` is set by the caller."""
    return rest_app(api.routes, api.PROBLEMS, MAX_BODY_BYTES)


def create_app(settings: ServiceSettings) -> web.Application:
    """The service as it runs: on startup the pool opens, migrations apply, and the outbox
    relay (order-events, payment-tasks) and the `orders` consumer (user-events,
    payment-events) start; they stop on shutdown, before the pool closes."""
    app = http_app()
    install_fault_flags(
        app,
        settings.consul_http_addr,
        settings.service,
        settings.consul_token,
        settings.consul_tls(),
    )
    install_internal_auth(app, settings)

    async def database(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url)
        users = UsersClient(settings.upstream_port("users"))
        payments = PaymentsClient(settings.upstream_port("payments"))
        try:
            await apply_migrations(pool, MIGRATIONS)
            app[api.SERVICE] = OrderService(PostgresOrdersDatabase(pool), users, payments)
            handler = in_consumer_transaction(PostgresOrdersUnitOfWork, on_event)
            async with messaging(
                pool,
                settings.instance,
                relay=True,
                consumers=[Consumer((Topic.USER_EVENTS, Topic.PAYMENT_EVENTS), "orders", handler)],
            ):
                yield
        finally:
            await users.close()
            await payments.close()
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except TimeoutError:
                pool.terminate()

    app.cleanup_ctx.append(database)
    return app
