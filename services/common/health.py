"""GET /health of the HTTP services: "does my database answer?", asked on a connection of its own.

Consul calls it every second. It must not queue behind the requests in the pool: under load every
pooled connection is busy, a probe waiting for one times out, and Consul takes an instance that
is only busy out of the mesh (the check also needs several failures in a row before that:
services/common/consul.py). So the probe keeps one connection outside the pool, reconnects it
when it breaks, and runs one ping at a time (a probe arriving meanwhile shares the answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from aiohttp import web

from services.common.db import DATABASE_UNAVAILABLE
from services.common.problem import UNAVAILABLE, Problem

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.8  # under Consul's 1 s check timeout


class Readiness(Protocol):
    async def ready(self) -> bool: ...


Connect = Callable[[str], Awaitable[Any]]


class DatabaseProbe:
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
        except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("database not ready", extra={"error": f"{type(exc).__name__}: {exc}"})
            await self.close()
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


HEALTH = web.AppKey("health", Readiness)

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    if not await request.app[HEALTH].ready():
        raise Problem(503, "Service unavailable", "the database does not answer", type=UNAVAILABLE)
    return web.json_response({"status": "ok"})


def install_database_health(app: web.Application, dsn: str) -> None:
    """GET /health on `app`, answered by a DatabaseProbe of `dsn` closed with the app."""
    probe = DatabaseProbe(dsn)
    app[HEALTH] = probe

    async def close(_app: web.Application) -> None:
        await probe.close()

    app.on_cleanup.append(close)
