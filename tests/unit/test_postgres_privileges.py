"""Least privilege on the Postgres nodes (mesh/components/patroni.py `hba_lines`,
mesh/components/postgres.py `service_roles`) and owner-only files (mesh/runtime/paths.py,
mesh/runtime/process.py): what can be checked without a running mesh. The real refusals:
tests/security/test_postgres_roles.py and tests/security/test_secrets.py."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mesh.components import patroni, postgres
from mesh.placement import NativePlacement
from mesh.runtime import process
from mesh.runtime.paths import StateDir, make_private, private_files
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology, load
from tests.support import wait_for

TRUSTED = "127.0.0.1/32"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def admitted(lines: list[str], user: str, database: str, *, replication: bool = False) -> bool:
    """pg_hba.conf's rule for a TCP connection from TRUSTED: the first line whose database and
    user fields match decides; no line matching is a refusal. (`replication` matches only a
    physical replication connection, which matches no other database field.)"""
    for line in lines:
        kind, db_field, user_field, address, method = line.split()
        assert kind == "host" and address == TRUSTED and method == "scram-sha-256", line
        db_ok = db_field == "replication" if replication else db_field in ("all", database)
        if db_ok and user_field in ("all", user):
            return True
    return False


def test_each_service_role_is_admitted_to_its_own_database_only(topology: Topology) -> None:
    lines = patroni.hba_lines(topology, TRUSTED)
    roles = postgres.service_roles(topology)
    assert roles == ["auth", "notifications", "orders", "payments", "users"]
    for role in roles:
        assert admitted(lines, role, role)
        for other in [*roles, "postgres", "template1"]:
            if other != role:
                assert not admitted(lines, role, other), f"{role} admitted to {other}"
        assert not admitted(lines, role, "replication", replication=True)
    assert not any(line.split()[1:3] == ["all", "all"] for line in lines)


def test_patronis_own_roles_reach_what_streaming_and_rewinding_need_and_nothing_more(
    topology: Topology,
) -> None:
    lines = patroni.hba_lines(topology, TRUSTED)
    assert admitted(lines, patroni.REPLICATION, "", replication=True)
    assert not admitted(lines, patroni.REPLICATION, "postgres")
    assert not admitted(lines, patroni.REPLICATION, "orders")
    # pg_rewind and Patroni's checks before it connect to the maintenance database.
    assert admitted(lines, patroni.REWIND, patroni.MAINTENANCE_DATABASE)
    assert not admitted(lines, patroni.REWIND, "orders")
    assert not admitted(lines, patroni.REWIND, "", replication=True)
    # The superuser: Patroni itself, `mesh up`'s provisioning, the tests' scratch databases.
    for database in ("postgres", "orders", "migrations_scratch"):
        assert admitted(lines, postgres.SUPERUSER, database)
    assert not admitted(lines, "stranger", "orders")


def test_every_node_is_given_those_lines(topology: Topology) -> None:
    for node in topology.postgres_nodes:
        config = patroni.config(
            topology,
            NativePlacement.of(topology),
            node,
            data_dir=Path("/data"),
            pgpass=Path("/pgpass"),
            bin_dir=Path("/bin"),
            superuser_password="su",
            roles={patroni.REPLICATION: "r", patroni.REWIND: "w", patroni.RESTAPI: "a"},
            consul_token="t",
            consul_ca=Path("/ca.pem"),
        )
        assert config["postgresql"]["pg_hba"] == patroni.hba_lines(topology, TRUSTED)
        # Patroni writes pg_hba.conf from this list: never from a file of its own.
        assert "hba_file" not in config["postgresql"]["parameters"]


@pytest.mark.parametrize("name", ["all", "replication", "postgres", "shopmesh", "Orders", "a b"])
def test_a_database_name_unfit_for_a_role_and_a_pg_hba_field_is_refused(
    topology: Topology, name: str
) -> None:
    orders = topology.service("orders")
    services = tuple(replace(s, database=name) if s is orders else s for s in topology.services)
    with pytest.raises(ValueError, match="not usable"):
        postgres.service_roles(replace(topology, services=services))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_an_earlier_state_dir_is_made_owner_only_links_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "state"
    (root / "data" / "kafka-1").mkdir(parents=True)
    (root / "data" / "kafka-1").chmod(0o755)
    segment = root / "data" / "kafka-1" / "00000.log"
    segment.write_text("x")
    segment.chmod(0o644)
    private = root / "private"
    private.write_text("y")
    private.chmod(0o600)
    link = root / "link"
    link.symlink_to("/etc/hostname")
    root.chmod(0o755)

    changed = make_private(root)

    assert changed == sorted([root, root / "data", root / "data" / "kafka-1", segment])
    assert (mode(root), mode(root / "data" / "kafka-1"), mode(segment)) == (0o700, 0o700, 0o600)
    assert mode(private) == 0o600
    assert stat.S_IMODE(Path("/etc/hostname").stat().st_mode) & 0o044  # its target untouched
    assert make_private(root) == []


def test_files_made_meanwhile_are_owner_only_and_the_umask_is_restored_after(
    tmp_path: Path,
) -> None:
    before = os.umask(0o022)
    try:
        with private_files():
            (tmp_path / "secret").write_text("s")
            (tmp_path / "folder").mkdir()
        (tmp_path / "after").write_text("a")
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
    assert mode(tmp_path / "secret") == 0o600 and mode(tmp_path / "folder") == 0o700
    assert mode(tmp_path / "after") == 0o644


def test_a_started_process_and_its_files_are_owner_only_whatever_the_callers_umask(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    made = tmp_path / "made"
    script = f"import os, pathlib; os.mkdir('{made}'); pathlib.Path('{made}/f').write_text('x')"
    written = tmp_path / "config.json"
    spec = ProcessSpec(
        name="writer",
        argv=[sys.executable, "-c", script],
        before_start=lambda: written.write_text("{}"),
    )
    before = os.umask(0o022)
    try:
        process.start(state, spec)
    finally:
        os.umask(before)
    wait_for(lambda: (made / "f").exists() and process.running(state, "writer") is None,
             timeout=30, what="the process to write its file and exit")  # fmt: skip
    assert (mode(made), mode(made / "f")) == (0o700, 0o600)
    assert mode(written) == 0o600  # written by before_start, in the runtime's own process
    assert mode(process.log_path(state, "writer")) == 0o600
    assert mode(state.pids / "writer.lock") == 0o600


def test_an_empty_state_dir_variable_counts_as_unset_not_as_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPMESH_STATE_DIR", "")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert StateDir.default().root == tmp_path / "xdg" / "shopmesh"

    monkeypatch.setenv("XDG_STATE_HOME", "")
    assert StateDir.default().root == (Path.home() / ".local" / "state" / "shopmesh").resolve()
