"""Wiring: the one place that knows the routes, the error handling, the hub and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from contracts import Topic
from services.common.auth.middleware import install_internal_auth
from services.common.config import ServiceSettings
from services.common.db import close_pool, create_pool
from services.common.kafka import Consumer, messaging
from services.common.messaging.migrations import PROCESSED_EVENTS
from services.common.metrics import watch_websockets
from services.common.migrations import ServiceMigrations, apply_migrations
from services.common.pg_listen import PgListener
from services.common.rest import rest_app
from services.notifications import api
from services.notifications.hub import Hub
from services.notifications.live import ANNOUNCE_CHANNEL, LiveFeed
from services.notifications.repository import PostgresRepository
from services.notifications.service import NotificationService

MAX_BODY_BYTES = 64 * 1024
MIGRATIONS = ServiceMigrations(Path(__file__).with_name("migrations"), shared=(PROCESSED_EVENTS,))
TOPICS = (Topic.USER_EVENTS, Topic.ORDER_EVENTS, Topic.PAYMENT_EVENTS)


def http_app(hub: Hub) -> web.Application:
    """Routes, error handling and the hub without a database; `api.SERVICE` is set by the
    caller. On shutdown, before in-flight requests are awaited, every socket is closed with
    1001 (going away)."""
    app = rest_app(api.routes, api.PROBLEMS, MAX_BODY_BYTES)
    app[api.HUB] = hub
    app.on_shutdown.append(_close_sockets)
    return app


def create_app(settings: ServiceSettings) -> web.Application:
    """The service as it runs: on startup the pool opens, migrations apply, the live feed
    listens and the `notifications` consumer (user-events, order-events, payment-events)
    starts."""
    hub = Hub()
    watch_websockets(settings.service, lambda: hub.connection_count, lambda: hub.queue_depth)
    app = http_app(hub)
    install_internal_auth(app, settings)

    async def database(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url)
        try:
            await apply_migrations(pool, MIGRATIONS)
            repository = PostgresRepository(pool)
            service = NotificationService(repository)
            app[api.SERVICE] = service
            feed = LiveFeed(repository, hub)
            async with (
                feed.running(PgListener(pool, ANNOUNCE_CHANNEL, feed.announce)),
                messaging(
                    pool,
                    settings.instance,
                    consumers=[Consumer(TOPICS, "notifications", service.on_event)],
                ),
            ):
                yield
        finally:
            await close_pool(pool)

    app.cleanup_ctx.append(database)
    return app


async def _close_sockets(app: web.Application) -> None:
    await app[api.HUB].shutdown()
