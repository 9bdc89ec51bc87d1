"""Postgres: one database and role per service, their generated passwords, the URLs they
connect with as a placement puts the servers, and their creation (natively and by compose).

Least privilege: a service's role owns its database and nothing else, may not create roles or
databases, is no superuser, and has no CONNECT on any other database (PUBLIC's is revoked from
every one of them). The native nodes' pg_hba.conf admits each role to its own database only
(mesh/components/patroni.py `hba_lines`). Both are applied again at every start, so a state dir
made by an earlier version is brought up to them. docs/security.md says what each one stops.
"""

from __future__ import annotations

import json
import re
import secrets

import asyncpg

from mesh.placement import Placement
from mesh.runtime.paths import StateDir, write_private
from mesh.topology import Topology

SUPERUSER = "shopmesh"
# Databases every Postgres has; no service's role may connect to them.
SYSTEM_DATABASES = ("postgres", "template1")

# A service's database name is also its role's name and a pg_hba.conf field: a plain lower-case
# identifier, none of pg_hba's keywords and none of the names the cluster itself uses.
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED = frozenset(
    {"all", "sameuser", "samerole", "samegroup", "replication", SUPERUSER, *SYSTEM_DATABASES}
)

# Connections: every service instance's pool (at most 10 each), the workers', the health
# checks' and Patroni's.
MAX_CONNECTIONS = 200
# Postgres's own cache, charged to the node's memory and kept full once a load has filled it;
# what it gives up is read from the kernel's page cache, which no process is charged for. At
# 64 MB (the default is 128) each node held 72-73 MB of shared memory after `make bench`
# (docs/performance.md, "Memory").
SHARED_BUFFERS = "64MB"


def server_flags() -> list[str]:
    """Postgres's settings as its command line's -c flags (compose, helm)."""
    settings = {"max_connections": MAX_CONNECTIONS, "shared_buffers": SHARED_BUFFERS}
    return [flag for name, value in settings.items() for flag in ("-c", f"{name}={value}")]


# What a service's role may never be (re-applied to a role an earlier version made).
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def service_roles(topology: Topology) -> list[str]:
    """The services' databases, each with a role of the same name, once each, sorted (workers
    use their service's database: mesh/topology.py checks it is one of these)."""
    roles = sorted({s.database for s in topology.services if s.database})
    for role in roles:
        if not _ROLE_NAME.match(role) or role in _RESERVED:
            raise ValueError(f"database {role!r}: not usable as a role, database and pg_hba name")
    return roles


def passwords(state: StateDir, topology: Topology) -> dict[str, str]:
    """Generated on first use, kept in the state dir's secrets folder (mode 0600)."""
    path = state.secrets / "postgres.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    wanted = [SUPERUSER, *service_roles(topology)]
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


async def _execute(conn: asyncpg.Connection, template: str, *args: str) -> None:
    """Run a utility statement (which takes no parameters) built by the server's own format():
    %I quotes an identifier, %L a literal."""
    statement: str = await conn.fetchval(f"SELECT format('{template}', {_params(args)})", *args)
    await conn.execute(statement)


def _params(args: tuple[str, ...]) -> str:
    return ", ".join(f"${n}::text" for n in range(1, len(args) + 1))


async def ensure_databases(
    topology: Topology,
    placement: Placement,
    pw: dict[str, str],
    *,
    maintenance_roles: tuple[str, ...] = (),
) -> None:
    """Each service's role and database, created if missing and held to least privilege
    (natively and by compose): idempotent, run at every start. `maintenance_roles` keep CONNECT
    on the `postgres` database, which PUBLIC loses (natively: Patroni's rewind role)."""
    roles = service_roles(topology)
    conn = await asyncpg.connect(
        database_url(topology, placement, SUPERUSER, pw[SUPERUSER], "postgres"), timeout=2
    )
    try:
        for role in roles:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await _execute(conn, "CREATE ROLE %I LOGIN", role)
            # Also re-applies a password regenerated with a fresh state dir secret.
            await _execute(
                conn, f"ALTER ROLE %I WITH {ROLE_ATTRIBUTES} PASSWORD %L", role, pw[role]
            )
            # No membership in another role (pg_read_all_data, another service's role ...).
            granted = await conn.fetch(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
                " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
                role,
            )
            for row in granted:
                await _execute(conn, "REVOKE %I FROM %I", row["rolname"], role)
        for role in roles:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", role):
                await _execute(conn, "CREATE DATABASE %I OWNER %I", role, role)
            await _execute(conn, "ALTER DATABASE %I OWNER TO %I", role, role)
            # The owner keeps its privileges; PUBLIC (every role) loses CONNECT and TEMPORARY,
            # and any grant an earlier version or a person made to another service goes too.
            await _execute(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", role)
            for other in roles:
                if other != role:
                    await _execute(conn, "REVOKE ALL ON DATABASE %I FROM %I", role, other)
        for role in maintenance_roles:
            await _execute(conn, "GRANT CONNECT ON DATABASE %I TO %I", "postgres", role)
        for database in SYSTEM_DATABASES:
            await _execute(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
    finally:
        await conn.close()
