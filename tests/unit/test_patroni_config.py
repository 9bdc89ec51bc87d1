"""Patroni's configuration of each Postgres node (mesh/components/patroni.py) and the URL the
services find the primary with."""

from __future__ import annotations

import stat
from collections import defaultdict
from pathlib import Path

import pytest

from mesh.components import patroni, postgres
from mesh.placement import ComposePlacement, NativePlacement
from mesh.runtime import postgres as runtime_postgres
from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology, load


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def node_config(topology: Topology, n: int) -> dict:
    return patroni.config(
        topology,
        NativePlacement.of(topology),
        topology.postgres_nodes[n],
        data_dir=Path("/data"),
        pgpass=Path("/pgpass"),
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        superuser_password="su",
        roles={patroni.REPLICATION: "rep", patroni.REWIND: "rew", patroni.RESTAPI: "api"},
        consul_token="patroni-token",
        consul_ca=Path("/patroni/consul-ca.pem"),
    )


def test_the_timings_let_a_primary_that_loses_consul_demote_before_its_lock_expires(
    topology: Topology,
) -> None:
    dcs = node_config(topology, 0)["bootstrap"]["dcs"]
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    # Patroni asks Consul for sessions of ttl / 2, and Consul refuses less than 10 s by default.
    assert dcs["ttl"] / 2 >= 10


def test_replication_is_synchronous_but_a_lone_primary_still_takes_writes(
    topology: Topology,
) -> None:
    dcs = node_config(topology, 0)["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is False
    assert dcs["failsafe_mode"] is True  # Consul down is no reason to stop writing
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"  # what pg_rewind needs


def test_each_node_has_the_shared_cache_and_connections_every_way_to_run_uses(
    topology: Topology,
) -> None:
    config = node_config(topology, 1)
    assert config["postgresql"]["parameters"]["shared_buffers"] == postgres.SHARED_BUFFERS
    dcs = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert dcs["max_connections"] == postgres.MAX_CONNECTIONS


def test_each_node_listens_on_its_own_ports_and_uses_the_nodes_consul_agent(
    topology: Topology,
) -> None:
    for n, node in enumerate(topology.postgres_nodes):
        config = node_config(topology, n)
        assert config["name"] == node.name
        assert config["postgresql"]["listen"] == f"127.0.0.1:{node.port}"
        assert config["restapi"]["listen"] == f"127.0.0.1:{node.patroni_port}"
        assert config["consul"]["url"] == NativePlacement.of(topology).consul_http_addr(topology)
        assert config["consul"]["token"] == "patroni-token"
        # Consul's API is HTTPS only: Patroni checks the agent with the Consul CA's copy.
        assert config["consul"]["url"].startswith("https://")
        assert config["consul"]["cacert"] == "/patroni/consul-ca.pem"
        assert config["consul"]["verify"] is True
        hba = config["postgresql"]["pg_hba"]
        assert all(line.endswith("127.0.0.1/32 scram-sha-256") for line in hba)
        auth = config["postgresql"]["authentication"]
        assert auth["superuser"] == {"username": postgres.SUPERUSER, "password": "su"}
        assert auth["replication"]["password"] == "rep" and auth["rewind"]["password"] == "rew"
        assert config["restapi"]["authentication"] == {"username": "patroni", "password": "api"}


def test_services_reach_whichever_node_takes_writes_natively_and_the_one_postgres_in_compose(
    topology: Topology,
) -> None:
    native = postgres.database_url(topology, NativePlacement.of(topology), "orders", "pw", "orders")
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in topology.postgres_nodes)
    assert native == f"postgresql://orders:pw@{hosts}/orders?target_session_attrs=read-write"
    compose = postgres.database_url(
        topology, ComposePlacement.of(topology), "orders", None, "orders"
    )
    assert compose == f"postgresql://orders@postgres:{topology.postgres_port}/orders"
    assert topology.postgres_port == topology.postgres_nodes[0].port


def test_the_replication_and_rewind_passwords_are_made_once_and_owner_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    first = patroni.passwords(state)
    assert set(first) == {patroni.REPLICATION, patroni.REWIND, patroni.RESTAPI}
    assert patroni.passwords(state) == first
    mode = (state.secrets / "patroni.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_each_node_is_a_patroni_process_started_after_consul_and_before_the_services(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    binaries = defaultdict(lambda: defaultdict(lambda: Path("/usr/lib/postgresql/15/bin/x")))
    mesh = Mesh(load(), state, binaries)
    names = mesh.names()
    nodes = [node.name for node in mesh.topology.postgres_nodes]
    assert nodes == ["postgres-1", "postgres-2"]
    assert mesh.resolve("postgres") == nodes
    assert names.index("consul") < names.index("postgres-1") < names.index("postgres-2")
    assert names.index("postgres-2") < min(names.index(i.id) for i in mesh.topology.instances())
    for node in mesh.topology.postgres_nodes:
        spec = mesh.spec(node.name)
        assert spec.argv[-3:] == [
            "-m",
            "patroni",
            str(runtime_postgres.home(state) / f"{node.name}.yml"),
        ]
        assert spec.ports == (node.port, node.patroni_port)
        assert spec.user == runtime_postgres.RUN_AS


def test_status_counts_the_cluster_healthy_only_with_a_leader_and_its_streaming_sync_standby() -> (
    None
):
    leader = {"name": "postgres-1", "role": "leader", "state": "running"}
    standby = {"name": "postgres-2", "role": "sync_standby", "state": "streaming", "lag": 0}
    assert runtime_postgres.describe([leader, standby]) == (
        "ok, leader postgres-1, sync_standby postgres-2 (streaming, lag 0)"
    )
    catching_up = {**standby, "role": "replica"}
    assert not runtime_postgres.describe([leader, catching_up]).startswith("ok,")
    assert runtime_postgres.describe([standby]).startswith("NO LEADER")
