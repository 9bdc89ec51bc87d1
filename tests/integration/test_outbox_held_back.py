"""Held-back outbox events (services.common.messaging.outbox, "Held back") on the mesh's real
Postgres, in a scratch database with the outbox's migrations: the relay's claim leaves a held-back
event until its time or its release, a release wakes the relay's listeners, a withdrawn event is
gone, and an event already published is neither withdrawn nor released."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from mesh.components import postgres
from mesh.runtime.supervisor import Mesh
from services.common.messaging import outbox
from services.common.messaging.migrations import OUTBOX
from services.common.migrations import ServiceMigrations, apply_migrations
from services.orders.domain import OrderItem, new_order
from services.orders.service import payment_requested_event

TOPIC = "payment-tasks"
HOURS = 3600.0
# A hold that ends within the test: the claim must find the event by itself after it.
SHORT_HOLD_S = 0.5


@pytest.fixture
def database(mesh: Mesh, tmp_path: Path) -> Iterator[str]:
    """A new database on the mesh's Postgres with the outbox's migrations, dropped afterwards."""
    password = postgres.passwords(mesh.state, mesh.topology)[postgres.SUPERUSER]

    def url(name: str) -> str:
        return postgres.database_url(
            mesh.topology, mesh.placement, postgres.SUPERUSER, password, name
        )

    name = f"outbox_{uuid.uuid4().hex[:8]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(url("postgres"))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def migrate() -> None:
        pool = await asyncpg.create_pool(url(name), min_size=1, max_size=2)
        try:
            await apply_migrations(pool, ServiceMigrations(tmp_path, shared=(OUTBOX,)))
        finally:
            await pool.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(migrate())
        yield url(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def task() -> tuple[str, dict]:
    """A payment task of a new order: (its key, the event)."""
    order = new_order("alice", [OrderItem("book", 1)])
    return str(order.id), payment_requested_event(order)


async def queue(pool: asyncpg.Pool, key: str, event: dict, hold_s: float | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, TOPIC, key, event, hold_s=hold_s)


async def claimable(store: outbox.PgOutboxStore) -> list[str]:
    """The keys the relay's next claim would publish, in order (nothing is marked published)."""
    async with store.claim(100) as claim:
        assert claim is not None
        return [row.key for row in claim.rows]


async def publish(store: outbox.PgOutboxStore) -> list[str]:
    async with store.claim(100) as claim:
        assert claim is not None
        await claim.mark_published([row.id for row in claim.rows])
        return [row.key for row in claim.rows]


def test_a_held_back_event_waits_for_its_time_or_its_release_and_a_withdrawn_one_is_gone(
    database: str,
) -> None:
    async def run() -> None:
        pool = await asyncpg.create_pool(database, min_size=1, max_size=3)
        store = outbox.PgOutboxStore(pool)
        (due, due_event), (held, held_event), (dropped, dropped_event) = task(), task(), task()
        (soon, soon_event) = task()
        try:
            await queue(pool, held, held_event, HOURS)
            await queue(pool, due, due_event, None)
            await queue(pool, dropped, dropped_event, HOURS)
            assert await claimable(store) == [due]
            assert (await store.backlog()).count == 1
            assert await publish(store) == [due]

            listener = await pool.acquire()
            woken = asyncio.Event()

            def wake(*_: object) -> None:
                woken.set()

            await listener.add_listener(outbox.NOTIFY_CHANNEL, wake)
            async with pool.acquire() as conn, conn.transaction():
                assert await outbox.release(conn, TOPIC, held) == 1
                assert await outbox.withdraw(conn, TOPIC, dropped) == 1
                # published already: neither withdrawn nor released
                assert await outbox.withdraw(conn, TOPIC, due) == 0
                assert await outbox.release(conn, TOPIC, due) == 0
            await asyncio.wait_for(woken.wait(), 10.0)
            await listener.remove_listener(outbox.NOTIFY_CHANNEL, wake)
            await pool.release(listener)
            assert await publish(store) == [held]
            remaining = await pool.fetch("SELECT key FROM outbox ORDER BY id")
            assert {row["key"] for row in remaining} == {held, due}

            await queue(pool, soon, soon_event, SHORT_HOLD_S)
            hold = await pool.fetchval(
                "SELECT EXTRACT(EPOCH FROM not_before - created_at) FROM outbox WHERE key = $1",
                soon,
            )
            assert float(hold) == SHORT_HOLD_S
            deadline = time.monotonic() + 30.0
            while not await claimable(store):
                assert time.monotonic() < deadline, "the short hold never ended"
                await asyncio.sleep(0.1)
            assert await publish(store) == [soon]
        finally:
            await pool.close()

    asyncio.run(run())
