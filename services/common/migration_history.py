"""`schema_migrations`: the migrations a database has applied, keyed by (set, version), with the
SHA-256 of each one's SQL.

The runner used to apply one folder per database and key this table by version alone, while
the services' folders held copies of the messaging tables' SQL. `prepare` upgrades such a table
in place: its rows become the set `service` (the folder that runner applied), except the copies
of shared migrations (the same SQL, so the same checksum), which become that migration, so it is
not applied a second time. The versions they leave free in a service's folder may be used again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeAlias

from services.common.db import Connection

log = logging.getLogger(__name__)

# The set of a service's own migrations folder.
SERVICE_SET = "service"

MigrationKey: TypeAlias = tuple[str, int]  # (set, version)


class Recorded(NamedTuple):
    """A migration as `schema_migrations` records it."""

    migration_set: str
    version: int
    name: str
    checksum: str

    @property
    def key(self) -> MigrationKey:
        return self.migration_set, self.version

    @property
    def label(self) -> str:
        return f"{self.migration_set}/{self.version:04d}_{self.name}"


_COLUMNS = """
SELECT attname FROM pg_attribute
WHERE attrelid = to_regclass('schema_migrations') AND attnum > 0 AND NOT attisdropped
"""

_CREATE = """
CREATE TABLE schema_migrations (
    migration_set text NOT NULL,
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_set, version)
)
"""

_INSERT = """
INSERT INTO schema_migrations (migration_set, version, name, checksum, applied_at)
VALUES ($1, $2, $3, $4, coalesce($5, now()))
"""


async def prepare(conn: Connection, shared: Sequence[Recorded]) -> None:
    """Create the table, or upgrade one keyed by version alone, `shared` being the migrations of
    the shared sets the database uses. The caller holds the migration lock in a transaction."""
    columns = {row["attname"] for row in await conn.fetch(_COLUMNS)}
    if not columns:
        await conn.execute(_CREATE)
    elif "migration_set" not in columns:
        await _key_by_set(conn, shared)


def keyed_by_set(legacy: Iterable[Recorded], shared: Iterable[Recorded]) -> list[Recorded]:
    """The rows of a table keyed by version alone (`legacy`, in the set `service`) as they are
    recorded now: a copy of a shared migration becomes that migration."""
    by_checksum = {migration.checksum: migration for migration in shared}
    return [by_checksum.get(row.checksum, row) for row in legacy]


async def recorded_checksum(conn: Connection, key: MigrationKey) -> str | None:
    checksum: str | None = await conn.fetchval(
        "SELECT checksum FROM schema_migrations WHERE migration_set = $1 AND version = $2", *key
    )
    return checksum


async def record(conn: Connection, migration: Recorded) -> None:
    await conn.execute(_INSERT, *migration, None)


async def _key_by_set(conn: Connection, shared: Sequence[Recorded]) -> None:
    # Recreated rather than altered, so an upgraded table is the same as a new one, column
    # order included; the transaction keeps the rows if anything fails.
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    legacy = [Recorded(SERVICE_SET, row["version"], row["name"], row["checksum"]) for row in rows]
    upgraded = keyed_by_set(legacy, shared)
    await conn.execute("DROP TABLE schema_migrations")
    await conn.execute(_CREATE)
    await conn.executemany(
        _INSERT,
        [(*new, row["applied_at"]) for new, row in zip(upgraded, rows, strict=True)],
    )
    log.info(
        "schema_migrations keyed by (set, version)",
        extra={
            "moved": [
                f"{old.label} -> {new.label}"
                for old, new in zip(legacy, upgraded, strict=True)
                if old != new
            ]
        },
    )
