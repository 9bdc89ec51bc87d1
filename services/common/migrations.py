"""Schema migrations: sets of `NNNN_name.sql` files, each migration applied once per database.

A service's database gets the shared sets its composition root declares (the messaging tables:
services.common.messaging.migrations), then its own `migrations/` folder, the set `service`.
`schema_migrations` records each applied migration by (set, version) with a checksum
(services.common.migration_history).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.common import migration_history
from services.common.db import Connection
from services.common.migration_history import SERVICE_SET, Recorded

log = logging.getLogger(__name__)

# One key for every service's migrations: advisory locks are scoped to the current database,
# and each service owns its database.
MIGRATION_LOCK_KEY = 0x5348_4F50_4D45_5348  # "SHOPMESH"

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations folder or the recorded schema history is inconsistent."""


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


@dataclass(frozen=True)
class MigrationSet:
    """The migrations of `directory`, recorded under `name`."""

    name: str
    directory: Path


@dataclass(frozen=True)
class ServiceMigrations:
    """A service database's migrations: the shared sets it uses, first (its own migrations may
    rely on their tables), then its own folder."""

    directory: Path
    shared: tuple[MigrationSet, ...] = ()

    def __post_init__(self) -> None:
        names = [migration_set.name for migration_set in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"migration sets need distinct names: {names}")

    @property
    def sets(self) -> tuple[MigrationSet, ...]:
        return (*self.shared, MigrationSet(SERVICE_SET, self.directory))


async def apply_migrations(pool: asyncpg.Pool, migrations: ServiceMigrations) -> list[str]:
    """Apply the migrations not yet recorded, set by set; return them as `set/NNNN_name`.

    Each step runs in its own transaction holding a transaction-level advisory lock, so
    instances starting together apply each migration exactly once. A recorded migration whose
    file has changed since is an error: migrations are append-only.
    """
    loaded = {s.name: load_migrations(s.directory) for s in migrations.sets}
    shared = [_recorded(s.name, m) for s in migrations.shared for m in loaded[s.name]]
    applied = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _lock(conn)
            await migration_history.prepare(conn, shared)
        for set_name, set_migrations in loaded.items():
            for migration in set_migrations:
                recorded = _recorded(set_name, migration)
                if await _apply_unless_recorded(conn, recorded, migration.sql):
                    log.info("migration applied", extra={"migration": recorded.label})
                    applied.append(recorded.label)
    return applied


async def _apply_unless_recorded(conn: Connection, migration: Recorded, sql: str) -> bool:
    async with conn.transaction():
        await _lock(conn)
        checksum = await migration_history.recorded_checksum(conn, migration.key)
        if checksum is not None:
            if checksum != migration.checksum:
                raise MigrationError(f"{migration.label} was changed after it was applied")
            return False
        await conn.execute(sql)
        await migration_history.record(conn, migration)
    return True


async def _lock(conn: Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)


def _recorded(set_name: str, migration: Migration) -> Recorded:
    return Recorded(set_name, migration.version, migration.name, migration.checksum)
