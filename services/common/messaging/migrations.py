"""Put the messaging tables into a service's own migrations folder.

`services.common.migrations.apply_migrations` runs the `NNNN_name.sql` files of one folder and
refuses files changed after they were applied, so a service keeps its own copy of each table's
SQL:

    python -m services.common.messaging.migrations services/orders/migrations \
        outbox processed_events

writes `NNNN_outbox.sql` / `NNNN_processed_events.sql` with the next free versions, unless a
file with the same SQL is already there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from services.common.messaging import outbox, processed
from services.common.migrations import load_migrations

TABLES = {"outbox": outbox.migration_sql, "processed_events": processed.migration_sql}


def install(directory: Path, table: str) -> Path | None:
    """Add the migration for `table` to `directory`; the file written, or None if present."""
    sql = TABLES[table]()
    existing = load_migrations(directory)
    if any(migration.sql == sql for migration in existing):
        return None
    version = max((migration.version for migration in existing), default=0) + 1
    path = directory / f"{version:04d}_{table}.sql"
    path.write_text(sql, "utf-8")
    return path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(table not in TABLES for table in argv[1:]):
        print(f"usage: migrations DIRECTORY {{{'|'.join(TABLES)}}}...", file=sys.stderr)
        return 2
    for table in argv[1:]:
        written = install(Path(argv[0]), table)
        print(written or f"{table}: already in {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
