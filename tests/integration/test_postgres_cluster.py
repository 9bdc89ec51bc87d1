"""The Patroni cluster for real, without the mesh: Consul and the two Postgres nodes started by
the runtime's own process specs on free ports in a temporary state dir (never the topology's: a
mesh may be running). A service's pool, on the multi-host URL the services are handed, writes
while the primary is SIGKILLed: nothing acknowledged is lost, every failure is one the services
answer 503 to, writes resume on the promoted standby, and the old primary rejoins as its
synchronous standby with every row."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace

import asyncpg
import pytest

from mesh.components import postgres as pg_roles
from mesh.placement import NativePlacement
from mesh.runtime import consul, postgres, process
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import CONSUL, POSTGRES
from mesh.topology import ConsulPorts, ConsulServer, PostgresNode, Topology, load
from services.common.db import DATABASE_UNAVAILABLE
from tests.ratelimit_processes import binaries, free_port
from tests.support import wait_for

WRITES_PER_S = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, StateDir]]:
    # One Consul server (enough for a DCS) and the client agent Patroni talks to.
    topology = replace(
        load(),
        consul_ports=ConsulPorts(*(free_port() for _ in range(3))),
        consul_servers=(ConsulServer(1, free_port(), free_port(), free_port()),),
        postgres_nodes=tuple(PostgresNode(n, free_port(), free_port()) for n in (1, 2)),
    )
    state = StateDir(tmp_path_factory.mktemp("postgres-cluster") / "state")
    state.ensure()
    placement = NativePlacement.of(topology)
    consul_bin = binaries(CONSUL)["consul"]
    specs = [
        *consul.server_specs(topology, placement, state, consul_bin),
        consul.agent_spec(topology, placement, state, consul_bin),
        *postgres.node_specs(topology, placement, state, binaries(POSTGRES)),
    ]
    try:
        for spec in specs:
            process.start(state, spec)
            process.wait_ready(state, spec)
        yield topology, state
    finally:
        for spec in reversed(specs):
            process.stop(state, spec.name, timeout=spec.stop_timeout)
        for node in topology.postgres_nodes:
            postgres.kill_postmaster(state, node)
        shutil.rmtree(postgres.home(state), ignore_errors=True)


def roles(topology: Topology) -> dict[str, tuple[str, str]]:
    found = postgres.cluster_members(topology, NativePlacement.of(topology))
    return {str(m["name"]): (str(m["role"]), str(m["state"])) for m in found}


def leader_and_standby(topology: Topology) -> tuple[str, str]:
    now = roles(topology)
    leader = next(name for name, (role, _) in now.items() if role == "leader")
    standby = next(name for name, (role, _) in now.items() if role == "sync_standby")
    return leader, standby


def kill(topology: Topology, state: StateDir, name: str) -> float:
    """The node's machine crashes: its Patroni and its Postgres SIGKILLed; when."""
    process.kill(state, name)
    node = next(n for n in topology.postgres_nodes if n.name == name)
    assert postgres.kill_postmaster(state, node), f"{name}'s Postgres was running"
    return time.monotonic()


def restart_and_wait_until_sync_standby(topology: Topology, state: StateDir, name: str) -> float:
    """Start the node again; how long until it is the streaming synchronous standby."""
    placement = NativePlacement.of(topology)
    spec = next(s for s in postgres.node_specs(topology, placement, state, binaries(POSTGRES))
                if s.name == name)  # fmt: skip
    restarted_at = time.monotonic()
    process.start(state, spec)
    wait_for(lambda: roles(topology).get(name) == ("sync_standby", "streaming"), timeout=120,
             what=f"{name} to rejoin as the synchronous standby")  # fmt: skip
    return time.monotonic() - restarted_at


async def rows_on(topology: Topology, node_name: str, password: str) -> int:
    """The acks rows one node has (a standby answers reads)."""
    node = next(n for n in topology.postgres_nodes if n.name == node_name)
    host = NativePlacement.of(topology).host(node.name)
    conn = await asyncpg.connect(f"postgresql://orders:{password}@{host}:{node.port}/orders")
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM acks")
        return count
    finally:
        await conn.close()


async def is_primary(topology: Topology, node_name: str, password: str) -> bool:
    node = next(n for n in topology.postgres_nodes if n.name == node_name)
    host = NativePlacement.of(topology).host(node.name)
    conn = await asyncpg.connect(f"postgresql://orders:{password}@{host}:{node.port}/orders")
    try:
        return not await conn.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await conn.close()


def test_writes_go_on_while_the_standby_is_dead_and_it_catches_up_when_back(
    cluster: tuple[Topology, StateDir],
) -> None:
    topology, state = cluster
    placement = NativePlacement.of(topology)
    leader, standby = leader_and_standby(topology)
    password = pg_roles.passwords(state, topology)["orders"]
    url = pg_roles.database_url(topology, placement, "orders", password, "orders")

    async def write(n_writes: int, kill_at: int) -> float:
        """Every write must succeed (the primary waits for its lost standby only until its
        Patroni drops the synchronous requirement); the longest a write took."""
        conn = await asyncpg.connect(url)
        longest = 0.0
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS acks (n int PRIMARY KEY)")
            await conn.execute("TRUNCATE acks")
            for n in range(1, n_writes + 1):
                if n == kill_at:
                    await asyncio.to_thread(kill, topology, state, standby)
                began = time.monotonic()
                await conn.execute("INSERT INTO acks VALUES ($1)", n)
                longest = max(longest, time.monotonic() - began)
                await asyncio.sleep(1 / WRITES_PER_S)
        finally:
            await conn.close()
        return longest

    longest = asyncio.run(write(200, kill_at=20))
    assert roles(topology)[leader][0] == "leader", "the primary stayed the primary"
    rejoined_after = restart_and_wait_until_sync_standby(topology, state, standby)
    wait_for(lambda: asyncio.run(rows_on(topology, standby, password)) == 200, timeout=30,
             what=f"all 200 rows on {standby} after its return")  # fmt: skip
    print(
        f"\nstandby {standby} killed: 200 of 200 writes acknowledged, the longest took "
        f"{longest:.1f} s; back as the sync standby {rejoined_after:.1f} s after its restart"
    )


def test_a_killed_primary_loses_no_acknowledged_write_and_rejoins_as_the_standby(
    cluster: tuple[Topology, StateDir],
) -> None:
    topology, state = cluster
    placement = NativePlacement.of(topology)
    primary, standby = leader_and_standby(topology)
    password = pg_roles.passwords(state, topology)["orders"]
    url = pg_roles.database_url(topology, placement, "orders", password, "orders")
    acknowledged: list[int] = []
    failed: dict[int, BaseException] = {}

    async def write_through_the_failover() -> tuple[float, int]:
        """Write at a steady rate, kill the primary at the 40th write, go on until 40 writes
        after the first failure went through; how long after the kill writes resumed, and how
        many rows the new primary has."""
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4, timeout=5)
        await pool.execute("CREATE TABLE IF NOT EXISTS acks (n int PRIMARY KEY)")
        await pool.execute("TRUNCATE acks")
        n, start, killed_at, resumed_after = 0, time.monotonic(), 0.0, 0.0
        try:
            while len([a for a in acknowledged if failed and a > min(failed)]) < 40:
                assert time.monotonic() - start < 180, "writes did not resume within 3 minutes"
                n += 1
                try:
                    await pool.execute("INSERT INTO acks VALUES ($1)", n)
                    acknowledged.append(n)
                    if failed and not resumed_after:
                        resumed_after = time.monotonic() - killed_at
                except DATABASE_UNAVAILABLE as exc:  # anything else fails the test
                    failed[n] = exc
                if n == 40:
                    killed_at = await asyncio.to_thread(kill, topology, state, primary)
                await asyncio.sleep(max(0.0, start + n / WRITES_PER_S - time.monotonic()))
            stored = set(await pool.fetchval("SELECT array_agg(n) FROM acks"))
        finally:
            await pool.close()
        assert set(acknowledged) <= stored, "an acknowledged write was lost"
        assert stored - set(acknowledged) <= set(failed), "only a failed write may have landed"
        return resumed_after, len(stored)

    resumed_after, stored = asyncio.run(write_through_the_failover())
    assert failed, "the kill interrupted the writes"
    assert roles(topology)[standby][0] == "leader"

    rejoined_after = restart_and_wait_until_sync_standby(topology, state, primary)
    wait_for(lambda: asyncio.run(rows_on(topology, primary, password)) == stored, timeout=30,
             what=f"every stored row on {primary}, now a standby")  # fmt: skip
    print(
        f"\n{len(acknowledged)} writes acknowledged, {len(failed)} failed "
        f"({sorted({type(e).__name__ for e in failed.values()})}); writes resumed "
        f"{resumed_after:.1f} s after the kill; {primary} a streaming sync standby "
        f"{rejoined_after:.1f} s after its restart"
    )


def test_the_primary_keeps_taking_writes_while_consul_is_down(
    cluster: tuple[Topology, StateDir],
) -> None:
    topology, state = cluster
    placement = NativePlacement.of(topology)
    leader, _ = leader_and_standby(topology)
    password = pg_roles.passwords(state, topology)["orders"]
    url = pg_roles.database_url(topology, placement, "orders", password, "orders")
    writes = 25 * WRITES_PER_S  # past retry_timeout and ttl, when Patroni would demote

    async def write() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS acks (n int PRIMARY KEY)")
            await conn.execute("TRUNCATE acks")
            for n in range(1, writes + 1):
                await conn.execute("INSERT INTO acks VALUES ($1)", n)
                await asyncio.sleep(1 / WRITES_PER_S)
        finally:
            await conn.close()

    process.kill(state, "consul")
    try:
        asyncio.run(write())
        # Patroni's /cluster reads Consul; the node's own Postgres says whether it still leads.
        assert asyncio.run(is_primary(topology, leader, password))
    finally:
        spec = consul.agent_spec(topology, placement, state, binaries(CONSUL)["consul"])
        process.start(state, spec)
        process.wait_ready(state, spec)
    wait_for(lambda: leader_and_standby(topology)[0] == leader, timeout=60,
             what=f"{leader} leading with a synchronous standby once Consul is back")  # fmt: skip
