"""LISTEN on one Postgres channel over a connection held from a pool.

The connection is held for as long as it lives. When the pool takes it back because it broke
(Postgres restarted, or a failover moved the primary), `ensure` listens again on a fresh one;
notifications sent in between are lost, which `ensure` tells its caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

ACQUIRE_TIMEOUT_S = 2.0


class PgListener:
    def __init__(self, pool: asyncpg.Pool, channel: str, on_payload: Callable[[str], None]):
        self._pool = pool
        self.channel = channel
        self._on_payload = on_payload
        self._conn: PoolConnectionProxy | None = None

    @property
    def listening(self) -> bool:
        try:
            return self._conn is not None and not self._conn.is_closed()
        except asyncpg.InterfaceError:
            # The pool took back a connection it saw break.
            return False

    async def ensure(self) -> bool:
        """Listen, unless already listening; True once listening (else the cause is logged
        and the caller tries again later)."""
        if self.listening:
            return True
        await self.close()
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except Exception as exc:
            log.debug("LISTEN unavailable", extra={"channel": self.channel, "error": repr(exc)})
            return False
        try:
            await conn.add_listener(self.channel, self._notified)
        except Exception as exc:
            log.debug("LISTEN failed", extra={"channel": self.channel, "error": repr(exc)})
            await self._pool.release(conn)
            return False
        self._conn = conn
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with suppress(Exception):
            if not conn.is_closed():
                await conn.remove_listener(self.channel, self._notified)
            await self._pool.release(conn)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self._on_payload(str(payload))
