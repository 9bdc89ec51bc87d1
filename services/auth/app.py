"""Wiring: the one place that knows the routes, the database, the keys and the users client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from contracts import Topic
from services.auth import api, sign_in_api
from services.auth.authorization import web_client
from services.auth.clients import UsersClient
from services.auth.config import AuthSettings
from services.auth.keys import KeyStore, ServiceToken
from services.auth.login_limits import LoginLimiter
from services.auth.repository import (
    PostgresCredentials,
    PostgresKeysDatabase,
    PostgresLoginAttempts,
)
from services.auth.seed import SeedError, apply_seed, load_seed
from services.auth.service import AuthService
from services.auth.sign_in import SignIn
from services.auth.sign_in_repository import PostgresSignIn
from services.common.config import ServiceSettings
from services.common.db import DATABASE_UNAVAILABLE, Connection, close_pool, create_pool
from services.common.kafka import Consumer, messaging
from services.common.messaging.envelope import Event
from services.common.messaging.migrations import PROCESSED_EVENTS
from services.common.migrations import ServiceMigrations, apply_migrations
from services.common.rest import rest_app
from services.common.runner import StartupError

MAX_BODY_BYTES = 16 * 1024
PRUNE_INTERVAL_S = 60
_PRUNE_ERRORS: tuple[type[BaseException], ...] = (OSError, *DATABASE_UNAVAILABLE)
log = logging.getLogger(__name__)

MIGRATIONS = ServiceMigrations(Path(__file__).with_name("migrations"), shared=(PROCESSED_EVENTS,))


def cache_group(instance: str) -> str:
    """The consumer group in which `instance` reads user-events: one per instance, since each
    instance drops a blocked user's exchanges from its own cache."""
    return f"auth-cache-{instance}"


async def prune_expired(logins: LoginLimiter, sign_in: SignIn) -> None:
    """Forget the failed-login windows that are over and expired sign-in records, every window
    (at most every minute), until cancelled; a failure waits for the next round."""
    interval_s = min(logins.settings.window_s, PRUNE_INTERVAL_S)
    while True:
        await asyncio.sleep(interval_s)
        try:
            await logins.prune()
            await sign_in.prune()
        except _PRUNE_ERRORS as exc:
            log.warning("cannot prune expired records", extra={"error": type(exc).__name__})


def http_app() -> web.Application:
    """Routes and error handling without a database; `api.SERVICE` is set by the caller."""
    app = rest_app(api.routes, api.PROBLEMS, MAX_BODY_BYTES)
    app.add_routes(sign_in_api.routes)
    return app


def create_app(settings: ServiceSettings, auth_settings: AuthSettings) -> web.Application:
    """The service as it runs: on startup the seed file is read, the pool opens, migrations
    apply, a signing key exists, and the seeded credentials are upserted."""
    app = http_app()
    users_port = settings.upstream_port("users")

    async def resources(app: web.Application) -> AsyncIterator[None]:
        try:
            seed = load_seed(auth_settings.seed_file)
        except SeedError as exc:
            raise StartupError(str(exc)) from None
        pool = await create_pool(settings.database_url)
        users: UsersClient | None = None
        reloads: asyncio.Task[None] | None = None
        pruning: asyncio.Task[None] | None = None
        try:
            await apply_migrations(pool, MIGRATIONS)
            keys = KeyStore(PostgresKeysDatabase(pool), jwks_cache_s=auth_settings.jwks_cache_s)
            await keys.ensure_active_key()
            await apply_seed(pool, seed)
            logins = LoginLimiter(PostgresLoginAttempts(pool), auth_settings.login_limits, keys.now)
            reloads = asyncio.create_task(keys.run_reloads(), name="signing key reloads")
            users = UsersClient(users_port, ServiceToken(keys))
            service = AuthService(
                PostgresCredentials(pool), keys, users, issuer=auth_settings.issuer, logins=logins
            )
            browser_client = web_client(auth_settings.web_origins)
            clients = {browser_client.client_id: browser_client}
            sign_in = SignIn(service, PostgresSignIn(pool), clients, clock=time.time)
            pruning = asyncio.create_task(prune_expired(logins, sign_in), name="pruning")
            app[api.SERVICE] = service
            app[sign_in_api.SIGN_IN] = sign_in

            async def on_user_event(conn: Connection, event: Event) -> None:
                await service.on_user_event(conn, event)
                await sign_in.on_user_event(conn, event)

            blocked_users = Consumer(
                (Topic.USER_EVENTS,), cache_group(settings.instance), on_user_event
            )
            async with messaging(pool, settings.instance, consumers=[blocked_users]) as kafka:
                (blocks,) = kafka.runners
                service.follow_blocks(lambda: blocks.caught_up_at)
                yield
        finally:
            for task in (reloads, pruning):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if users is not None:
                await users.close()
            await close_pool(pool)

    app.cleanup_ctx.append(resources)
    return app
