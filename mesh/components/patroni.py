"""Patroni's configuration for one Postgres node of the native mesh: Consul as its store, the
two nodes in synchronous replication, pg_rewind for a failed primary that rejoins.

Timings, for a busy 2-core machine: Patroni's Consul sessions cannot live less than Consul's
`session_ttl_min` (10 s by default), and Patroni asks for half its `ttl` because Consul lets a
session live up to twice its TTL; so `ttl` 20 is the shortest and a dead primary's lock goes
20 s after its last renewal at most. The primary renews every `loop_wait` (3 s): it would have to
stall for over 17 s to lose the lock while alive. Patroni wants `loop_wait + 2 * retry_timeout
<= ttl`, so that a primary whose store stops answering demotes itself before its lock expires.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from mesh.components.postgres import MAX_CONNECTIONS, SHARED_BUFFERS, SUPERUSER, service_roles
from mesh.placement import Placement
from mesh.runtime.paths import StateDir, write_private
from mesh.topology import PostgresNode, Topology

# Patroni's cluster name: its keys in Consul KV are under service/<SCOPE>/.
SCOPE = "shopmesh-postgres"
REPLICATION = "replicator"
REWIND = "rewind"
# The REST API's user for its unsafe calls (switchover, restart, reinitialize). Reads (GET
# /patroni, /cluster, /health ...) stay open: Patroni checks no credentials on a GET, only a
# client certificate (`restapi.verify_client: required`, TLS) would close them, and they carry no
# secret (docs/security.md, "Patroni's REST API").
RESTAPI = "patroni"
# The database pg_rewind (as REWIND) and Patroni's own checks connect to on the other node.
MAINTENANCE_DATABASE = "postgres"

TTL_S = 20
LOOP_WAIT_S = 3
RETRY_TIMEOUT_S = 8


def passwords(state: StateDir) -> dict[str, str]:
    """The replication and rewind roles' passwords and the REST API's: generated once,
    owner-only in the state dir (the superuser's is postgres.json's)."""
    path = state.secrets / "patroni.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [role for role in (REPLICATION, REWIND, RESTAPI) if role not in stored]
    if missing:
        stored |= {role: secrets.token_urlsafe(24) for role in missing}
        write_private(path, json.dumps(stored, indent=2))
    return stored


def hba_lines(topology: Topology, trusted: str) -> list[str]:
    """pg_hba.conf, first match wins and nothing else gets in: the replication role for
    streaming only, the rewind role to the maintenance database only, the superuser (Patroni,
    `mesh up`'s provisioning, the tests) anywhere, and each service's role to its own database
    only, all from `trusted` with SCRAM. Patroni writes it anew at every start of its Postgres
    (and when it takes up one already running), so an existing data dir gets it too."""
    lines = [
        f"host replication {REPLICATION} {trusted} scram-sha-256",
        f"host {MAINTENANCE_DATABASE} {REWIND} {trusted} scram-sha-256",
        f"host all {SUPERUSER} {trusted} scram-sha-256",
    ]
    lines += [f"host {role} {role} {trusted} scram-sha-256" for role in service_roles(topology)]
    return lines


def config(
    topology: Topology,
    placement: Placement,
    node: PostgresNode,
    *,
    data_dir: Path,
    pgpass: Path,
    bin_dir: Path,
    superuser_password: str,
    roles: dict[str, str],
    consul_token: str,
    consul_ca: Path,
) -> dict[str, Any]:
    """The node's patroni.yml, as a dict. It carries passwords and Patroni's Consul token:
    written owner-only, Patroni's user's (which cannot read the state dir's secrets: the
    Consul CA's certificate it checks the agent's HTTPS API with, `consul_ca`, is a copy in
    its own folder)."""
    host = placement.address(node.name)
    consul = placement.consul_http_addr(topology, node.name)
    trusted = placement.clients_of(node.name)
    return {
        "scope": SCOPE,
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"{placement.listen(node.name)}:{node.patroni_port}",
            "connect_address": f"{host}:{node.patroni_port}",
            "authentication": {"username": RESTAPI, "password": roles[RESTAPI]},
        },
        # The node's agent; the services find the primary themselves (a multi-host URL).
        "consul": {
            "url": consul,
            "cacert": str(consul_ca),
            "verify": True,
            "register_service": False,
            "token": consul_token,
        },
        "bootstrap": {
            "dcs": {
                "ttl": TTL_S,
                "loop_wait": LOOP_WAIT_S,
                "retry_timeout": RETRY_TIMEOUT_S,
                # A standby this far behind is never promoted (it cannot be, in synchronous mode).
                "maximum_lag_on_failover": 1024 * 1024,
                # Not strict: with the standby gone the primary writes alone rather than stop
                # (docs/failure-modes.md, the Postgres rows).
                "synchronous_mode": True,
                "synchronous_mode_strict": False,
                # Consul down: the primary stays the primary while it reaches every other node's
                # REST API (none of them can take its place without Consul either), instead of
                # demoting itself after retry_timeout and stopping every write.
                "failsafe_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "max_connections": MAX_CONNECTIONS,
                        "synchronous_commit": "on",
                        "wal_level": "replica",
                        "wal_log_hints": "on",
                        "hot_standby": "on",
                        "max_wal_senders": 5,
                        "max_replication_slots": 5,
                        "wal_keep_size": "128MB",
                        "password_encryption": "scram-sha-256",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}],
        },
        "postgresql": {
            "listen": f"{placement.listen(node.name)}:{node.port}",
            "connect_address": f"{host}:{node.port}",
            "data_dir": str(data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(pgpass),
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": superuser_password},
                "replication": {"username": REPLICATION, "password": roles[REPLICATION]},
                "rewind": {"username": REWIND, "password": roles[REWIND]},
            },
            "parameters": {
                "unix_socket_directories": "",
                "fsync": "on",
                # Local, not in the cluster's stored config: a cluster bootstrapped before takes
                # it at its next start too.
                "shared_buffers": SHARED_BUFFERS,
            },
            "pg_hba": hba_lines(topology, trusted),
            "basebackup": [{"checkpoint": "fast"}],
            # A failed primary that cannot be rewound is cloned anew from the new primary.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
        },
    }
