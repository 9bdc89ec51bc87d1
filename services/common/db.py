"""Postgres access: a pool that waits for the database, and a migration runner."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.common.logging import redact_url
from services.common.retry import Backoff, Failure, retry
from services.common.telemetry import query_logger

log = logging.getLogger(__name__)

# Errors that mean "Postgres is not ready yet" rather than "this will never work".
_TRANSIENT_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
)

# One key for every service's migrations: advisory locks are scoped to the current database,
# and each service owns its database.
MIGRATION_LOCK_KEY = 0x5348_4F50_4D45_5348  # "SHOPMESH"

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


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


class MigrationError(Exception):
    """The migrations folder or the recorded schema history is inconsistent."""


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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """The `NNNN_name.sql` files of `directory`, in version order."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version:04d} appears twice")
        migrations[version] = Migration(version, match["name"], path.read_text("utf-8"))
    return [migrations[v] for v in sorted(migrations)]


async def apply_migrations(pool: asyncpg.Pool, directory: Path) -> list[str]:
    """Apply the migrations of `directory` not yet recorded; return the names applied.

    Each migration runs in its own transaction holding a transaction-level advisory lock, so
    instances starting together apply each migration exactly once. A recorded migration whose
    file has changed since is an error: migrations are append-only.
    """
    applied = []
    async with pool.acquire() as conn:
        for migration in load_migrations(directory):
            label = f"{migration.version:04d}_{migration.name}"
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
                await conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
                recorded = await conn.fetchval(
                    "SELECT checksum FROM schema_migrations WHERE version = $1",
                    migration.version,
                )
                if recorded is not None:
                    if recorded != migration.checksum:
                        raise MigrationError(f"{label} was changed after it was applied")
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", extra={"migration": label})
            applied.append(label)
    return applied


async def close_pool(pool: asyncpg.Pool, *, timeout_s: float = 5.0) -> None:
    """Close `pool`, letting connections in use finish for `timeout_s`, then terminate them."""
    try:
        await asyncio.wait_for(pool.close(), timeout=timeout_s)
    except TimeoutError:
        log.warning("database pool did not close in time; terminating it")
        pool.terminate()
