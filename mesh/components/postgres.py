"""Postgres: one database and role per service, their generated passwords, the URLs they
connect with as a placement puts the servers, and their creation (natively and by compose).
"""

from __future__ import annotations

import json
import secrets

import asyncpg

from mesh.placement import Placement
from mesh.runtime.paths import StateDir, write_private
from mesh.topology import Topology

SUPERUSER = "shopmesh"


def passwords(state: StateDir, topology: Topology) -> dict[str, str]:
    """Generated on first use, kept in the state dir's secrets folder (mode 0600)."""
    path = state.secrets / "postgres.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    wanted = [SUPERUSER, *(s.database for s in topology.services if s.database)]
    changed = False
    for role in wanted:
        if role not in stored:
            stored[role] = secrets.token_urlsafe(24)
            changed = True
    if changed:
        write_private(path, json.dumps(stored, indent=2))
    return stored


def database_url(
    topology: Topology, placement: Placement, role: str, password: str | None, database: str
) -> str:
    """The URL `role` connects to `database` with, at Postgres as the placement reaches it;
    without `password` the client finds it itself (PGPASSFILE)."""
    credentials = f"{role}:{password}" if password is not None else role
    endpoints = placement.postgres_endpoints(topology)
    url = f"postgresql://{credentials}@{','.join(endpoints)}/{database}"
    # Several nodes (Patroni's): libpq's and asyncpg's multi-host URL, tried in order until one
    # accepts writes, so every new connection finds whichever node is the primary now.
    return f"{url}?target_session_attrs=read-write" if len(endpoints) > 1 else url


async def ensure_databases(topology: Topology, placement: Placement, pw: dict[str, str]) -> None:
    """Each service's role and database, created if missing (natively and by compose)."""
    conn = await asyncpg.connect(
        database_url(topology, placement, SUPERUSER, pw[SUPERUSER], "postgres"), timeout=2
    )
    try:
        for service in topology.services:
            db = service.database
            if not db:
                continue
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", db):
                await conn.execute(f'CREATE ROLE "{db}" LOGIN')
            # Idempotent: also re-applies a password regenerated with a fresh state dir secret.
            await conn.execute(f"ALTER ROLE \"{db}\" PASSWORD '{pw[db]}'")
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
                await conn.execute(f'CREATE DATABASE "{db}" OWNER "{db}"')
    finally:
        await conn.close()
