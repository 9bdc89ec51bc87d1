"""Reading a service's database, to check what a run left behind."""

from __future__ import annotations

import asyncio

import asyncpg

from mesh.components import postgres
from mesh.placement import NativePlacement
from mesh.runtime.paths import StateDir
from mesh.topology import Topology


def query(
    topology: Topology, state: StateDir, database: str, sql: str, *args: object
) -> list[asyncpg.Record]:
    password = postgres.passwords(state, topology)[database]
    url = postgres.database_url(
        topology, NativePlacement.of(topology), database, password, database
    )

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())
