"""A database made by the runner keyed by version alone, with the messaging tables' SQL copied
into the service's folder, upgraded in place by the runner of shared sets, on the mesh's
Postgres: nothing applied twice, nothing lost, the same schema as a database made new."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from mesh.components import postgres
from mesh.runtime.supervisor import Mesh
from services.common.messaging.migrations import OUTBOX, PROCESSED_EVENTS
from services.common.migrations import (
    Migration,
    ServiceMigrations,
    apply_migrations,
    load_migrations,
)
from services.orders.app import MIGRATIONS as ORDERS
from services.payments.app import MIGRATIONS as PAYMENTS

# Where each service's folder held its copies, by version.
COPIES = {
    "orders": (ORDERS, {3: OUTBOX, 4: PROCESSED_EVENTS}),
    "payments": (PAYMENTS, {2: OUTBOX, 3: PROCESSED_EVENTS}),
}

_SCHEMA = """
SELECT c.relname AS relation, c.relkind::text AS kind,
       coalesce(a.attnum, 0) AS position, coalesce(a.attname, '') AS attribute,
       coalesce(format_type(a.atttypid, a.atttypmod), '') AS type, coalesce(a.attnotnull, false)
           AS not_null,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS default,
       coalesce(pg_get_indexdef(c.oid), '') AS index
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    AND c.relkind IN ('r', 'p')
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
ORDER BY 1, 3
"""


def legacy_folder(service: str) -> list[Migration]:
    """The service's folder as the runner keyed by version alone applied it."""
    migrations, copies = COPIES[service]
    own = load_migrations(migrations.directory)
    copied = [
        dataclasses.replace(load_migrations(shared.directory)[0], version=version)
        for version, shared in copies.items()
    ]
    return sorted([*own, *copied], key=lambda m: m.version)


async def apply_version_keyed(conn: asyncpg.Connection, folder: list[Migration]) -> None:
    """What that runner did: each file in version order, recorded by version."""
    await conn.execute(
        """
        CREATE TABLE schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    for migration in folder:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )


def added_since(migrations: ServiceMigrations) -> list[str]:
    """The shared sets' migrations written after the runner keyed by version alone: the first
    run of today's runner applies them."""
    return [name for names in recorded_names(migrations) for name in names[1:]]


def recorded_names(migrations: ServiceMigrations) -> list[list[str]]:
    """Each shared set's migrations as `apply_migrations` names them, set by set."""
    return [
        [f"{shared.name}/{m.version:04d}_{m.name}" for m in load_migrations(shared.directory)]
        for shared in migrations.shared
    ]


@pytest.fixture
def scratch_databases(mesh: Mesh) -> Iterator[tuple[str, str]]:
    """Two new empty databases on the mesh's Postgres, dropped afterwards: their URLs."""
    password = postgres.passwords(mesh.state, mesh.topology)[postgres.SUPERUSER]

    def url(database: str) -> str:
        return postgres.database_url(
            mesh.topology, mesh.placement, postgres.SUPERUSER, password, database
        )

    names = [f"migrations_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("upgraded", "new")]

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(url("postgres"))
        try:
            for name in names:
                await conn.execute(statement.format(name))
        finally:
            await conn.close()

    asyncio.run(run('CREATE DATABASE "{}"'))
    try:
        yield url(names[0]), url(names[1])
    finally:
        asyncio.run(run('DROP DATABASE IF EXISTS "{}" WITH (FORCE)'))


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Connection]]:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            yield pool, conn
    finally:
        await pool.close()


async def history(conn: asyncpg.Connection) -> list[tuple[str, int, str, str]]:
    rows = await conn.fetch(
        "SELECT migration_set, version, name, checksum FROM schema_migrations ORDER BY 1, 2"
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("service", sorted(COPIES))
def test_a_version_keyed_database_is_upgraded_in_place_to_the_schema_of_a_new_one(
    service: str, scratch_databases: tuple[str, str]
) -> None:
    upgraded_url, new_url = scratch_databases
    migrations: ServiceMigrations = COPIES[service][0]
    event_id = uuid.uuid4()

    async def run() -> None:
        async with connected(upgraded_url) as (pool, conn):
            await apply_version_keyed(conn, legacy_folder(service))
            legacy = await conn.fetch("SELECT checksum, applied_at FROM schema_migrations")
            await conn.execute(
                "INSERT INTO outbox (event_id, topic, key, payload) VALUES ($1, 't', 'k', '{}')",
                event_id,
            )
            assert await apply_migrations(pool, migrations) == added_since(migrations)
            assert await apply_migrations(pool, migrations) == []
            upgraded = await history(conn)
            applied_at = await conn.fetch("SELECT checksum, applied_at FROM schema_migrations")
            assert set(map(tuple, legacy)) <= set(map(tuple, applied_at))
            assert len(applied_at) == len(legacy) + len(added_since(migrations))
            assert await conn.fetchval("SELECT event_id FROM outbox") == event_id
            upgraded_schema = [tuple(row) for row in await conn.fetch(_SCHEMA)]

        async with connected(new_url) as (pool, conn):
            applied = await apply_migrations(pool, migrations)
            shared = [name for names in recorded_names(migrations) for name in names]
            assert applied[: len(shared)] == shared
            assert len(applied) == len(legacy) + len(added_since(migrations))
            assert await apply_migrations(pool, migrations) == []
            new = await history(conn)
            new_schema = [tuple(row) for row in await conn.fetch(_SCHEMA)]

        own = load_migrations(migrations.directory)
        assert upgraded == new
        assert {(s, v) for s, v, _, _ in upgraded} == {
            *((s.name, m.version) for s in migrations.shared for m in load_migrations(s.directory)),
            *(("service", m.version) for m in own),
        }
        assert {"outbox", "processed_events", "schema_migrations"} <= {r[0] for r in new_schema}
        assert upgraded_schema == new_schema

    asyncio.run(run())
