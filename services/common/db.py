"""Postgres access: a pool that waits for the database."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.common.logging import redact_url
from services.common.retry import Backoff, Failure, retry
from services.common.telemetry import query_logger

log = logging.getLogger(__name__)

# A pool closes a connection idle this long: each is a Postgres backend of ~3 MB, and after a
# peak eleven pools held ~90 of them for asyncpg's default five minutes.
IDLE_CONNECTION_LIFETIME_S = 30.0

# Errors that mean "Postgres is not ready yet" rather than "this will never work".
_TRANSIENT_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
    # Every node answered, none as a primary: a failover is under way.
    asyncpg.TargetServerAttributeNotMatched,
)

# Postgres is down, restarting or out of connections: the same call may succeed when retried
# (503 over HTTP, UNAVAILABLE over gRPC, another attempt in a consumer), unlike an error about
# the query itself.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    # A pooled connection left broken by a lost server: "connection is closed", "cannot switch
    # to state ...; another operation is in progress". The pool drops it when it fails to reset.
    # (InterfaceError also names misuse of a connection; that shows in the warning logged.)
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


# A connection as repositories, units of work and consumer handlers are given one: a pool's
# (asyncpg hands out a PoolConnectionProxy, which isinstance counts as a Connection; the type
# stubs keep the two classes apart) or one of asyncpg.connect's.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class DatabaseUnavailableError(Exception):
    """Postgres did not accept connections before the deadline."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    conn.add_query_logger(query_logger())


async def skip_reset_query(_conn: asyncpg.Connection) -> None:
    """The pool's reset on release, instead of asyncpg's default reset query.

    Before calling it the pool still rolls back a transaction left open and drops listeners;
    what it no longer runs is `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL;`: one more round trip to Postgres per request, for session state these services never
    leave behind (no SET, no session advisory locks or cursors; the outbox relay's LISTEN is
    removed before its connection goes back).
    """


async def create_pool(
    dsn: str,
    *,
    deadline_s: float = 60.0,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout_s: float = 5.0,
) -> asyncpg.Pool:
    """Open a pool, retrying with backoff until `deadline_s` while Postgres is starting.

    json and jsonb columns are decoded to Python values and encoded from them; every query
    run inside a span gets a span of its own (services.common.telemetry.query_logger).
    """

    def not_reachable_yet(failure: Failure) -> None:
        log.warning(
            "database not reachable yet",
            extra={
                "database": redact_url(dsn),
                "attempt": failure.attempt,
                "error": f"{type(failure.error).__name__}: {failure.error}",
                "retry_in_s": round(failure.retry_in_s, 2),
            },
        )

    try:
        return await retry(
            lambda: asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                max_inactive_connection_lifetime=IDLE_CONNECTION_LIFETIME_S,
                timeout=connect_timeout_s,
                init=_init_connection,
                reset=skip_reset_query,
            ),
            backoff=Backoff(initial_s=0.2, max_s=2.0),
            retryable=lambda exc: isinstance(exc, _TRANSIENT_CONNECT_ERRORS),
            on_failure=not_reachable_yet,
            deadline_s=deadline_s,
        )
    except _TRANSIENT_CONNECT_ERRORS as exc:
        raise DatabaseUnavailableError(
            f"{redact_url(dsn)} not reachable after {deadline_s:.0f}s: {exc}"
        ) from exc


async def close_pool(pool: asyncpg.Pool, *, timeout_s: float = 5.0) -> None:
    """Close `pool`, letting connections in use finish for `timeout_s`, then terminate them."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout_s)
    except TimeoutError:
        log.warning("database pool did not close in time; terminating it")
        pool.terminate()
