"""The one Postgres server of the native mesh: its data dir, initdb, and its process (the
databases, roles and passwords: mesh/components/postgres.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import asyncpg

from mesh.components.postgres import SUPERUSER, ensure_databases, passwords
from mesh.placement import POSTGRES, Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology

# Postgres refuses to run as root; as root we run it as the Debian package's `postgres` user.
RUN_AS = "postgres" if os.geteuid() == 0 else None


def data_dir(state: StateDir) -> Path:
    if RUN_AS is None:
        return state.data / "postgres"
    # The postgres user cannot enter root's home, so its data lives in its own home,
    # in a folder named after the state directory it belongs to.
    digest = hashlib.sha256(str(state.root).encode()).hexdigest()[:12]
    return Path("/var/lib/postgresql/shopmesh") / digest


def _initdb(initdb: Path, pgdata: Path, superuser_password: str, marker: Path) -> None:
    if (pgdata / "PG_VERSION").exists():
        if marker.exists():
            return
        # Left behind by an earlier state dir at the same path, whose secrets are gone.
        shutil.rmtree(pgdata)
    pgdata.mkdir(parents=True, exist_ok=True)
    pwfile = pgdata.parent / f".{pgdata.name}.pw"
    pwfile.write_text(superuser_password)
    if RUN_AS:
        shutil.chown(pgdata.parent, RUN_AS, RUN_AS)
        shutil.chown(pgdata, RUN_AS, RUN_AS)
        shutil.chown(pwfile, RUN_AS, RUN_AS)
    pgdata.chmod(0o700)
    try:
        proc = subprocess.run(
            [
                str(initdb),
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            user=RUN_AS,
            group=RUN_AS,
            extra_groups=[] if RUN_AS else None,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"initdb failed: {proc.stderr.strip()}")
    marker.write_text(str(pgdata))


def server_spec(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> ProcessSpec:
    pgdata = data_dir(state)
    pw = passwords(state, topology)

    def ready() -> str | None:
        try:
            asyncio.run(ensure_databases(topology, placement, pw))
        except (OSError, asyncpg.PostgresError) as exc:
            return f"not accepting connections yet ({exc.__class__.__name__})"
        return None

    return ProcessSpec(
        name="postgres",
        argv=[
            str(binaries["postgres"]),
            "-D",
            str(pgdata),
            "-c",
            f"listen_addresses={placement.listen(POSTGRES)}",
            "-c",
            f"port={topology.postgres_port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
        ],
        user=RUN_AS,
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, exit cleanly
        ports=(topology.postgres_port,),
        ready=ready,
        ready_timeout=60,
        before_start=lambda: _initdb(
            binaries["initdb"], pgdata, pw[SUPERUSER], state.data / "postgres-initialized"
        ),
    )
