"""Schema migrations: the `NNNN_name.sql` files of a folder, applied once per database."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

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
