"""On the running mesh, nothing in its state dir (secrets, configs, logs, data: Kafka's segments,
Consul's Raft, Prometheus's TSDB ...) nor in its Postgres nodes' folder is open to the group or
to other users of the machine; every config that holds a password is its owner's alone, and
another account really cannot read them. (tests/integration/test_secrets_stay_private.py checks
the folders themselves and that no log holds a token.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mesh.runtime import postgres as runtime_postgres
from mesh.runtime.supervisor import Mesh

OTHER_USER = "nobody"


def walk(root: Path) -> Iterator[tuple[Path, int]]:
    """Every file and folder under `root` with its permission bits (not links; not what went
    away meanwhile, as a Kafka segment may)."""
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / n for n in (*dirs, *files))]:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(st.st_mode):
                yield path, stat.S_IMODE(st.st_mode)


def roots(mesh: Mesh) -> list[Path]:
    """The state dir, and the Postgres nodes' folder (outside it when Patroni runs as postgres)."""
    home = runtime_postgres.home(mesh.state)
    inside = home.is_relative_to(mesh.state.root)
    return [mesh.state.root] if inside else [mesh.state.root, home]


def test_nothing_the_mesh_keeps_is_open_to_the_group_or_others(mesh: Mesh) -> None:
    seen = {"secrets": 0, "config": 0, "logs": 0, "data": 0}
    open_ = []
    for root in roots(mesh):
        for path, mode in walk(root):
            parts = path.relative_to(root).parts
            if root == mesh.state.root and parts and parts[0] in seen:
                seen[parts[0]] += 1
            if mode & 0o077:
                open_.append(f"{oct(mode)} {path}")
    assert open_ == [], f"{len(open_)} open to others, e.g. {open_[:20]}"
    # The walk saw each part of the state dir, and Kafka's and Consul's data among it.
    assert all(count > 1 for count in seen.values()), seen
    data = mesh.state.data
    assert any(data.glob("kafka-1/*/*.log")) and any(data.glob("consul-server-1/raft/*"))


def secret_values(mesh: Mesh) -> set[str]:
    """Every password and key the state dir's secrets folder holds (JSON maps, or one value),
    its subfolders' (Kafka's principals) included."""
    values: set[str] = set()
    for path in mesh.state.secrets.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace").strip()
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = text
        if isinstance(loaded, dict):
            values |= {v for v in loaded.values() if isinstance(v, str)}
        elif isinstance(loaded, str) and "\n" not in loaded:
            values.add(loaded)
    return {v for v in values if len(v) >= 16}


def test_configs_holding_a_password_are_the_owners_alone(mesh: Mesh) -> None:
    secrets = secret_values(mesh)
    assert len(secrets) >= 5, "the Postgres roles' passwords at least"
    holding = []
    for root in [mesh.state.config, *roots(mesh)[1:]]:
        for path, mode in walk(root):
            if path.is_file() and path.stat().st_size < 1_000_000:
                text = path.read_text(errors="replace")
                if any(secret in text for secret in secrets):
                    holding.append(path)
                    assert mode & 0o077 == 0, f"{path} holds a password and is {oct(mode)}"
    # Patroni's config of each node holds the superuser's password at least.
    node_configs = {f"{node.name}.yml" for node in mesh.topology.postgres_nodes}
    # Each Kafka node's server.properties holds the broker's; the tools' settings the admin's.
    node_configs |= {f"{node.name}.properties" for node in mesh.topology.kafka.nodes}
    node_configs.add("admin-client.properties")
    assert node_configs <= {path.name for path in holding}, holding
    for path in holding:
        assert_unreadable_by_another_user(path)


def assert_unreadable_by_another_user(path: Path) -> None:
    read = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", "cat", str(path)], capture_output=True
    )
    assert read.returncode != 0 and read.stdout == b"", path
    assert b"Permission denied" in read.stderr, (path, read.stderr)


def test_another_user_reads_no_secret_log_or_data_file(mesh: Mesh) -> None:
    state = mesh.state
    samples = [
        state.secrets / "postgres.json",
        state.secrets / "kafka" / "orders",
        state.logs / "orders-1.log",
        next(state.data.glob("kafka-1/*/*.log")),
        next(state.data.glob("consul-server-1/raft/*")),
        runtime_postgres.data_dir(state, mesh.topology.postgres_nodes[0]) / "PG_VERSION",
    ]
    for path in samples:
        assert path.exists(), path
        assert_unreadable_by_another_user(path)
