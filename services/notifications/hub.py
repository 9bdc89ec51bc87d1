"""The live WebSocket connections of each user, and the fan-out to them.

Each connection has a bounded queue of outgoing messages and its own writer task that drains
it, so publishing never waits for a socket: a slow client delays nobody else, neither the other
connections nor the caller that publishes. When a connection's queue is full, the connection is
closed with 1013 (try again later): the client reconnects and fetches what it missed from
GET /notifications. A close that the peer does not let through within `close_timeout_s` (it
stopped reading) aborts the TCP connection instead.

A writer blocked in a send is never cancelled: aiohttp's sends of one connection wait for
the transport to drain on one shared future, and cancelling one waiter cancels it for all of
them, which would break the close frame's own wait. The writer stops by itself once the
connection is closing; only a writer idle on its queue is cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import WSCloseCode

from services.notifications.domain import hello

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
HEARTBEAT_S = 20.0
CLOSE_TIMEOUT_S = 5.0

SLOW_CONSUMER_REASON = "notification queue full; reconnect and fetch GET /notifications"
SHUTDOWN_REASON = "server shutting down"
INTERRUPTED_REASON = "live feed interrupted; reconnect and fetch GET /notifications"


class Socket(Protocol):
    """The part of aiohttp's WebSocketResponse the hub uses."""

    @property
    def close_code(self) -> int | None: ...

    async def send_str(self, data: str) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Transport(Protocol):
    def abort(self) -> None: ...


class Connection:
    """One open WebSocket of one user: a bounded queue and the task that writes it out."""

    def __init__(
        self,
        connection_id: int,
        user_id: str,
        socket: Socket,
        transport: Transport | None,
        *,
        queue_size: int,
        close_timeout_s: float,
    ) -> None:
        self.id = connection_id
        self.user_id = user_id
        self._close_code: int | None = None
        self._socket = socket
        self._transport = transport
        self._close_timeout_s = close_timeout_s
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._closing: asyncio.Task[None] | None = None
        self._sending = False
        self._writer = asyncio.create_task(self._write(), name=f"notifications-writer-{self.id}")

    @property
    def close_code(self) -> int | None:
        """The code the hub closed with, else the socket's (the peer's close, or 1006 after a
        missed heartbeat); None while open."""
        return self._close_code if self._close_code is not None else self._socket.close_code

    @property
    def queue_depth(self) -> int:
        """Messages queued and not yet handed to the socket."""
        return self._queue.qsize()

    @property
    def queue_size(self) -> int:
        return self._queue.maxsize

    def offer(self, text: str) -> bool:
        """Queue `text`; False if the connection sends nothing more. asyncio.QueueFull if full."""
        if self._closing is not None or self._writer.done():
            return False
        self._queue.put_nowait(text)
        return True

    def close(self, code: int, reason: str) -> asyncio.Task[None]:
        """Stop sending queued messages and close the socket with `code`; the first call
        starts the close, later calls return the same task."""
        if self._closing is None:
            self._close_code = code
            self._closing = asyncio.create_task(
                self._close(code, reason), name=f"notifications-close-{self.id}"
            )
        return self._closing

    async def finished(self) -> None:
        """Wait until nothing of this connection runs any more: its close, or its writer.

        Called once the socket has ended, so a writer still blocked in a send has nobody
        left to wait for. A close under way is shielded: if the caller is cancelled (aiohttp
        cancels handlers whose peer went away), the close still runs to its deadline.
        """
        if self._closing is None:
            await _cancelled(self._writer)
        else:
            await asyncio.shield(self._closing)

    async def _write(self) -> None:
        try:
            while self._closing is None:
                text = await self._queue.get()
                self._sending = True
                await self._socket.send_str(text)
                self._sending = False
        except ConnectionError as exc:
            log.info(
                "notification socket stopped accepting writes",
                extra={"connection_id": self.id, "user_id": self.user_id, "error": str(exc)},
            )
        except Exception:
            log.exception(
                "notification writer failed",
                extra={"connection_id": self.id, "user_id": self.user_id},
            )

    async def _close(self, code: int, reason: str) -> None:
        """Send the close frame and let the writer finish; abort the TCP connection if that
        does not happen within `close_timeout_s`."""
        if not self._sending:
            await _cancelled(self._writer)
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await self._socket.close(code=code, message=reason.encode())
                await asyncio.wait({self._writer})
            return
        except TimeoutError:
            why = "the peer did not take the close frame in time"
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            why = "the close frame's wait for the transport to drain was cancelled"
        log.warning(
            "notification socket aborted",
            extra={
                "connection_id": self.id,
                "user_id": self.user_id,
                "close_code": code,
                "reason": why,
                "close_timeout_s": self._close_timeout_s,
            },
        )
        if self._transport is not None:
            self._transport.abort()
        await _cancelled(self._writer)


class Hub:
    """Every live connection, by user. Counts for metrics: `connection_count`, `queue_depth`,
    `slow_consumer_closes`; the first two are read by the metrics server's thread at each
    scrape, so they iterate over copies (`list()` of a dict's values or of a set is taken
    without releasing the GIL)."""

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        heartbeat_s: float = HEARTBEAT_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.queue_size = queue_size
        self.heartbeat_s = heartbeat_s
        self.close_timeout_s = close_timeout_s
        self.slow_consumer_closes = 0
        self._by_user: dict[str, set[Connection]] = {}
        self._closes: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def connection_count(self) -> int:
        return sum(len(connections) for connections in list(self._by_user.values()))

    @property
    def queue_depth(self) -> int:
        """Messages queued on all connections and not yet handed to their sockets."""
        return sum(
            c.queue_depth for connections in list(self._by_user.values()) for c in list(connections)
        )

    def connections_of(self, user_id: str) -> tuple[Connection, ...]:
        return tuple(self._by_user.get(user_id, ()))

    def connect(self, user_id: str, socket: Socket, transport: Transport | None) -> Connection:
        """Start the writer of a freshly upgraded socket and queue its hello message.

        After shutdown has begun, the connection is closed at once with 1001 (going away).
        """
        connection = Connection(
            next(self._ids),
            user_id,
            socket,
            transport,
            queue_size=self.queue_size,
            close_timeout_s=self.close_timeout_s,
        )
        connection.offer(_encode(hello(user_id)))
        if self._closed:
            self._close(connection, WSCloseCode.GOING_AWAY, SHUTDOWN_REASON)
            return connection
        self._by_user.setdefault(user_id, set()).add(connection)
        log.info(
            "notification socket connected",
            extra={
                "connection_id": connection.id,
                "user_id": user_id,
                "user_connections": len(self._by_user[user_id]),
            },
        )
        return connection

    async def disconnect(self, connection: Connection) -> None:
        """Forget `connection` and wait for its writer or its close to end."""
        self._forget(connection)
        try:
            await connection.finished()
        finally:
            log.info(
                "notification socket disconnected",
                extra={
                    "connection_id": connection.id,
                    "user_id": connection.user_id,
                    "close_code": connection.close_code,
                },
            )

    def publish(self, user_id: str, message: Mapping[str, Any]) -> int:
        """Queue `message` on every live connection of `user_id`; return how many took it.

        Never waits: a connection whose queue is full is closed with 1013 instead.
        """
        text = _encode(message)
        queued = 0
        for connection in self.connections_of(user_id):
            try:
                if connection.offer(text):
                    queued += 1
            except asyncio.QueueFull:
                self._close_slow(connection)
        return queued

    def interrupt(self) -> int:
        """Close every connection with 1012 (service restart): messages may have been missed,
        and the client catches up from the history after it reconnects. Returns how many."""
        return self._close_all(WSCloseCode.SERVICE_RESTART, INTERRUPTED_REASON)

    async def shutdown(self) -> None:
        """Close every connection with 1001 (going away) and wait for every close under way
        (these and earlier 1013 closes) to finish."""
        self._closed = True
        self._close_all(WSCloseCode.GOING_AWAY, SHUTDOWN_REASON)
        await asyncio.gather(*self._closes, return_exceptions=True)

    def _close_all(self, code: int, reason: str) -> int:
        connections = [c for connections in self._by_user.values() for c in connections]
        self._by_user.clear()
        if connections:
            log.info(
                "closing notification sockets",
                extra={"connections": len(connections), "close_code": code},
            )
        for connection in connections:
            self._close(connection, code, reason)
        return len(connections)

    def _close_slow(self, connection: Connection) -> None:
        self._forget(connection)
        self.slow_consumer_closes += 1
        log.warning(
            "notification queue full; closing the slow connection",
            extra={
                "connection_id": connection.id,
                "user_id": connection.user_id,
                "queue_size": connection.queue_size,
                "close_code": int(WSCloseCode.TRY_AGAIN_LATER),
            },
        )
        self._close(connection, WSCloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON)

    def _close(self, connection: Connection, code: int, reason: str) -> None:
        closing = connection.close(code, reason)
        self._closes.add(closing)
        closing.add_done_callback(self._closes.discard)

    def _forget(self, connection: Connection) -> None:
        connections = self._by_user.get(connection.user_id)
        if connections is None:
            return
        connections.discard(connection)
        if not connections:
            del self._by_user[connection.user_id]


def _encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
