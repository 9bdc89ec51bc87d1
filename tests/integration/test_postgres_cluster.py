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
from pathlib import Path

import asyncpg
import pytest

from mesh.components import postgres as pg_roles
from mesh.placement import NativePlacement
from mesh.runtime import consul, postgres, process
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import CONSUL, POSTGRES
from mesh.topology import ConsulPorts, PostgresNode, Topology, load
from services.common.db import DATABASE_UNAVAILABLE
from tests.ratelimit_processes import binaries, free_port
from tests.support import wait_for

WRITES_PER_S = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Topology, StateDir]]:
    topology = replace(
        load(),
        consul_ports=ConsulPorts(*(free_port() for _ in range(4))),
        postgres_nodes=tuple(PostgresNode(n, free_port(), free_port()) for n in (1, 2)),
    )
    state = StateDir(tmp_path / "state")
    state.ensure()
    placement = NativePlacement.of(topology)
    specs = [
        consul.server_spec(topology, placement, state, binaries(CONSUL)["consul"]),
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


def test_a_killed_primary_loses_no_acknowledged_write_and_rejoins_as_the_standby(
    cluster: tuple[Topology, StateDir],
) -> None:
    topology, state = cluster
    placement = NativePlacement.of(topology)
    before = roles(topology)
    primary = next(name for name, (role, _) in before.items() if role == "leader")
    standby = next(name for name, (role, _) in before.items() if role == "sync_standby")
    password = pg_roles.passwords(state, topology)["orders"]
    url = pg_roles.database_url(topology, placement, "orders", password, "orders")
    acknowledged: list[int] = []
    failed: dict[int, BaseException] = {}

    def kill(name: str) -> float:
        process.kill(state, name)
        node = next(n for n in topology.postgres_nodes if n.name == name)
        assert postgres.kill_postmaster(state, node), f"{name}'s Postgres was running"
        return time.monotonic()

    async def write_through_the_failover() -> float:
        """Write at a steady rate, kill the primary at the 40th write, go on until 40 writes
        after the first failure went through; how long after the kill writes resumed."""
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4, timeout=5)
        await pool.execute("CREATE TABLE IF NOT EXISTS acks (n int PRIMARY KEY)")
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
                    killed_at = await asyncio.to_thread(kill, primary)
                await asyncio.sleep(max(0.0, start + n / WRITES_PER_S - time.monotonic()))
            stored = set(await pool.fetchval("SELECT array_agg(n) FROM acks"))
        finally:
            await pool.close()
        assert set(acknowledged) <= stored, "an acknowledged write was lost"
        assert stored - set(acknowledged) <= set(failed), "only a failed write may have landed"
        return resumed_after

    resumed_after = asyncio.run(write_through_the_failover())
    assert failed, "the kill interrupted the writes"
    assert roles(topology)[standby][0] == "leader"

    spec = next(s for s in postgres.node_specs(topology, placement, state, binaries(POSTGRES))
                if s.name == primary)  # fmt: skip
    restarted_at = time.monotonic()
    process.start(state, spec)
    wait_for(lambda: roles(topology).get(primary) == ("sync_standby", "streaming"), timeout=120,
             what=f"{primary} to rejoin as the synchronous standby")  # fmt: skip
    rejoined_after = time.monotonic() - restarted_at

    async def rows_on(node: PostgresNode) -> int:
        conn = await asyncpg.connect(
            f"postgresql://orders:{password}@{placement.host(node.name)}:{node.port}/orders"
        )
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM acks")
            return count
        finally:
            await conn.close()

    old = next(n for n in topology.postgres_nodes if n.name == primary)
    wait_for(lambda: asyncio.run(rows_on(old)) == len(acknowledged), timeout=30,
             what=f"every acknowledged row on {primary}, now a standby")  # fmt: skip
    print(
        f"\n{len(acknowledged)} writes acknowledged, {len(failed)} failed "
        f"({sorted({type(e).__name__ for e in failed.values()})}); writes resumed "
        f"{resumed_after:.1f} s after the kill; {primary} a streaming sync standby "
        f"{rejoined_after:.1f} s after its restart"
    )
