"""An instance's health, as Consul's check asks for it: "is my event loop making progress, and does
my database answer?", answered off the event loop.

A busy instance is not a dead one. Under load every request, and any /health route beside them,
queues on the service's one event loop: a health check served there times out exactly when the
instance is busiest, and Consul takes the only instance out of the mesh while it serves requests
fine. So health is answered by the admin server's thread (services/common/admin.py, the port that
also serves /metrics) from two facts it can read without queueing:
- the event loop's heartbeat, a stamp the loop's own task refreshes every HEARTBEAT_S: older than
  LOOP_STALL_S means the loop is stuck (a blocking call, a runaway handler), not merely busy;
- a `SELECT 1` on a connection of its own, run on an event loop of its own in a thread of its own,
  so it never waits for the request pool or the request loop; one ping at a time (checks
  arriving meanwhile share the answer), reconnecting when the connection breaks.
Consul also needs several failures in a row before it takes an instance out (the check in the
registration the mesh hands the instance, mesh/registration.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import asyncpg

from services.common.db import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.8  # under Consul's 1 s check timeout
HEARTBEAT_S = 0.5
LOOP_STALL_S = 5.0

Connect = Callable[[str], Awaitable[Any]]

# What makes a ping answer "not ready": the database cannot be reached, or it refuses the query.
_NOT_READY: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)


class DatabaseProbe:
    """`SELECT 1` on a connection of its own, one ping at a time."""

    def __init__(
        self, dsn: str, *, timeout_s: float = PROBE_TIMEOUT_S, connect: Connect = asyncpg.connect
    ) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._connect = connect
        self._conn: Any = None
        self._in_flight: asyncio.Task[bool] | None = None

    async def ready(self) -> bool:
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.create_task(self._ping())
        return await asyncio.shield(self._in_flight)

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect(self._dsn)
                await self._conn.fetchval("SELECT 1")
        except _NOT_READY as exc:
            log.warning("database not ready", extra={"error": f"{type(exc).__name__}: {exc}"})
            await self.close()
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


class Heartbeat:
    """A stamp the service's event loop refreshes (`run`); its age is read from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def age_s(self) -> float:
        return self._clock() - self._last

    async def run(self, every_s: float = HEARTBEAT_S) -> None:
        while True:
            self.beat()
            await asyncio.sleep(every_s)


class HealthCheck:
    """What the admin server's /health answers: None when healthy, else the reason."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        probe: DatabaseProbe | None,
        *,
        stall_s: float = LOOP_STALL_S,
    ) -> None:
        self._heartbeat = heartbeat
        self._probe = probe
        self._stall_s = stall_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The probe's own event loop, in a daemon thread."""
        if self._probe is None or self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="health", daemon=True)
        self._loop = loop
        self._thread.start()

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or self._probe is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._probe.close(), loop)
        try:
            closing.result(timeout=1.0)
        except Exception as exc:  # best effort on the way out
            log.debug("health probe did not close", extra={"error": repr(exc)})
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def problem(self) -> str | None:
        age = self._heartbeat.age_s()
        if age > self._stall_s:
            return f"the event loop has not run for {age:.1f}s"
        if self._probe is None:
            return None
        if self._loop is None:
            return "the health check is not running"
        pinged = asyncio.run_coroutine_threadsafe(self._probe.ready(), self._loop)
        try:
            ready = pinged.result(timeout=PROBE_TIMEOUT_S + 0.1)
        except FutureTimeout:
            return "the database does not answer"
        return None if ready else "the database does not answer"
