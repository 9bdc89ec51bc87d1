"""The Postgres nodes of the native mesh, each a Patroni process that runs its own Postgres
(its configuration: mesh/components/patroni.py; databases, roles and passwords:
mesh/components/postgres.py).

Patroni starts Postgres in a session of its own, so the postmaster outlives a Patroni that is
killed (a Patroni restarted by the watchdog takes it up again). A node killed by `mesh kill` is a
crashed machine: its postmaster is killed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import shutil
import signal
import sys
import sysconfig
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import yaml

from mesh.components import patroni
from mesh.components.consul_acl import PATRONI
from mesh.components.postgres import SUPERUSER, ensure_databases, passwords
from mesh.placement import Placement
from mesh.runtime import consul_acl
from mesh.runtime.paths import OWNER_ONLY_FILE, StateDir, write_private
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import consul_ca
from mesh.topology import PostgresNode, Topology

# Postgres refuses to run as root; as root we run Patroni, and so Postgres, as the Debian
# package's `postgres` user.
RUN_AS = "postgres" if os.geteuid() == 0 else None


def home(state: StateDir) -> Path:
    """Where the nodes' data dirs and Patroni configs live."""
    if RUN_AS is None:
        return state.data / "patroni"
    # The postgres user cannot enter root's home, so its data lives in its own home,
    # in a folder named after the state directory it belongs to.
    digest = hashlib.sha256(str(state.root).encode()).hexdigest()[:12]
    return Path("/var/lib/postgresql/shopmesh-patroni") / digest


def data_dir(state: StateDir, node: PostgresNode) -> Path:
    return home(state) / node.name


def consul_ca_copy(state: StateDir) -> Path:
    """Where Patroni finds the Consul CA's certificate: its own folder (it cannot read the
    state dir's secrets)."""
    return home(state) / "consul-ca.pem"


def _patroni_command(binaries: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
    """How to run the Patroni pinned in pyproject.toml: this interpreter, or, for the postgres
    user, which may not reach it (a pyenv under /root), Debian's python of the same version
    with this environment's packages."""
    if RUN_AS is None:
        return [sys.executable, "-m", "patroni"], {}
    paths = sysconfig.get_paths()
    site = os.pathsep.join(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    return [str(binaries["python"]), "-m", "patroni"], {"PYTHONPATH": site}


def _prepare(
    state: StateDir,
    node: PostgresNode,
    document: dict[str, Any],
    config_file: Path,
) -> None:
    """The node's folder, config file (owner-only) and the Consul CA's certificate (copied at
    each start: a state dir from before Consul's HTTPS API gets it too). A data dir left by an
    earlier state dir at the same path, whose secrets are gone, is removed."""
    pgdata = data_dir(state, node)
    marker = state.data / f"{node.name}-initialized"
    if pgdata.exists() and not marker.exists():
        shutil.rmtree(pgdata)
    folder = home(state)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    config_file.unlink(missing_ok=True)
    fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(document, fh, sort_keys=False)
    write_private(consul_ca_copy(state), consul_ca(state).read_bytes())
    if RUN_AS:
        shutil.chown(folder.parent, RUN_AS, RUN_AS)
        shutil.chown(folder, RUN_AS, RUN_AS)
        shutil.chown(config_file, RUN_AS, RUN_AS)
        shutil.chown(consul_ca_copy(state), RUN_AS, RUN_AS)
    marker.write_text(str(pgdata))


def patroni_url(placement: Placement, node: PostgresNode) -> str:
    return f"http://{placement.host(node.name)}:{node.patroni_port}"


def cluster_members(topology: Topology, placement: Placement) -> list[dict[str, object]]:
    """The members as any running node's Patroni sees them (name, role, state, lag)."""
    last: Exception | None = None
    for node in topology.postgres_nodes:
        try:
            resp = httpx.get(f"{patroni_url(placement, node)}/cluster", timeout=2.0)
            resp.raise_for_status()
            members: list[dict[str, object]] = resp.json().get("members", [])
            return members
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
    raise ConnectionError(f"no Patroni REST API answers ({last.__class__.__name__})")


def cluster_health(topology: Topology, placement: Placement) -> str:
    """`mesh status`'s line for the cluster: who leads, who follows and how."""
    try:
        return describe(cluster_members(topology, placement))
    except ConnectionError as exc:
        return str(exc)


def describe(members: list[dict[str, object]]) -> str:
    """`ok, leader ...` (as `mesh status` counts healthy) when a node leads and every other is
    its streaming synchronous standby; else what is the matter."""
    leaders = [m for m in members if m.get("role") == "leader" and m.get("state") == "running"]
    others = [m for m in members if m not in leaders]
    parts = [f"leader {leaders[0]['name']}" if leaders else "NO LEADER"]
    parts += [f"{m.get('role')} {m.get('name')} ({m.get('state')}, lag {m.get('lag', '?')})"
              for m in others]  # fmt: skip
    in_sync = all((m.get("role"), m.get("state")) == ("sync_standby", "streaming") for m in others)
    return ("ok, " if leaders and in_sync else "") + ", ".join(parts)


def node_running(placement: Placement, node: PostgresNode) -> str | None:
    try:
        resp = httpx.get(f"{patroni_url(placement, node)}/patroni", timeout=2.0)
        state = resp.json().get("state")
    except (httpx.HTTPError, ValueError) as exc:
        return f"Patroni not answering ({exc.__class__.__name__})"
    return None if state == "running" else f"Postgres {state} under Patroni"


def _cluster_ready(topology: Topology, placement: Placement, state: StateDir) -> str | None:
    """A leader, the other nodes its synchronous standbys, and the services' roles and
    databases on it."""
    members = cluster_members(topology, placement)
    if not any(m.get("role") == "leader" and m.get("state") == "running" for m in members):
        return "no leader yet"
    # In synchronous mode the primary names its standby once it streams: from then on a commit
    # is acknowledged only once both nodes have it.
    behind = [str(m["name"]) for m in members if m.get("role") != "leader"
              and (m.get("role") != "sync_standby" or m.get("state") != "streaming")]  # fmt: skip
    if behind:
        return f"{', '.join(behind)} not a streaming synchronous standby yet"
    try:
        asyncio.run(
            ensure_databases(
                topology,
                placement,
                passwords(state, topology),
                maintenance_roles=(patroni.REWIND,),
            )
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"the primary not accepting connections yet ({exc.__class__.__name__})"
    return None


def node_specs(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> list[ProcessSpec]:
    """One Patroni per node. A node is ready once its Postgres runs; the last one once the
    cluster is: a leader, the others streaming, the databases there."""
    argv, env = _patroni_command(binaries)
    superuser = passwords(state, topology)[SUPERUSER]
    roles = patroni.passwords(state)
    specs = []
    for node in topology.postgres_nodes:
        config_file = home(state) / f"{node.name}.yml"
        document = patroni.config(
            topology,
            placement,
            node,
            data_dir=data_dir(state, node),
            pgpass=home(state) / f"{node.name}.pgpass",
            bin_dir=binaries["postgres"].parent,
            superuser_password=superuser,
            roles=roles,
            consul_token=consul_acl.secret(state, PATRONI),
            consul_ca=consul_ca_copy(state),
        )

        def ready(node: PostgresNode = node) -> str | None:
            reason = node_running(placement, node)
            if reason or node != topology.postgres_nodes[-1]:
                return reason
            return _cluster_ready(topology, placement, state)

        specs.append(
            ProcessSpec(
                name=node.name,
                argv=[*argv, str(config_file)],
                env={**env, "HOME": str(home(state))},
                user=RUN_AS,
                # Patroni stops its Postgres ("fast": open transactions rolled back), then exits.
                stop_signal=signal.SIGTERM,
                stop_timeout=40,
                ports=(node.port, node.patroni_port),
                ready=ready,
                ready_timeout=120,
                before_start=functools.partial(_prepare, state, node, document, config_file),
            )
        )
    return specs


def postmaster(state: StateDir, name: str) -> psutil.Process | None:
    """The running postmaster of node `name` (Patroni's Postgres, which is not Patroni's child)."""
    try:
        pid = int((home(state) / name / "postmaster.pid").read_text().split("\n", 1)[0])
        found = psutil.Process(pid)
        return found if found.name() == "postgres" else None
    except (OSError, ValueError, psutil.Error):
        return None


def kill_postmaster(state: StateDir, node: PostgresNode) -> bool:
    """SIGKILL the node's Postgres, as a crash of its machine; True if one ran. Patroni starts
    the postmaster from a helper that made a session of its own and exited: the postmaster and
    its backends are that session's process group, and nothing else is."""
    found = postmaster(state, node.name)
    if found is None:
        return False
    try:
        group = os.getpgid(found.pid)
    except ProcessLookupError:
        return False
    if group == os.getpgrp():
        raise RuntimeError(f"{node.name}'s Postgres (pid {found.pid}) is in the caller's group")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        found.wait(timeout=5)
    return True
