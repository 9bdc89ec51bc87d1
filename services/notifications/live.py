"""The live feed: a stored notification reaches its user's sockets on whichever instance they
are connected to.

One instance's consumer stores an event (the `notifications` group splits the partitions among
the instances), and the insert announces it on the Postgres channel `notifications`: NOTIFY is
delivered to every listening session once the insert commits, in commit order. Every instance
listens, and pushes the announced notifications of the users connected to it, one at a time in
the order announced, reading each from the database only when someone is there to receive it.

A LISTEN connection that broke (Postgres restarted, the primary moved) lost the announcements
of its downtime. The feed listens again and closes every socket of its instance with 1012
(service restart): the clients reconnect and fill the gap from GET /notifications, as after any
close. So does an announcement queue that overflowed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, NamedTuple, Protocol

from services.notifications.domain import Notification

log = logging.getLogger(__name__)

ANNOUNCE_CHANNEL = "notifications"
QUEUE_SIZE = 10_000
LISTEN_CHECK_INTERVAL_S = 1.0


class Notifications(Protocol):
    async def get(self, notification_id: uuid.UUID) -> Notification | None: ...


class Sockets(Protocol):
    def connections_of(self, user_id: str) -> tuple[object, ...]: ...

    def publish(self, user_id: str, message: Mapping[str, Any]) -> int: ...

    def interrupt(self) -> int:
        """Close every socket so that its client catches up from the history."""
        ...


class Listener(Protocol):
    @property
    def listening(self) -> bool: ...

    async def ensure(self) -> bool: ...

    async def close(self) -> None: ...


class Announcement(NamedTuple):
    user_id: str
    notification_id: uuid.UUID


def parse_announcement(payload: str) -> Announcement:
    """ValueError unless `payload` is `{"user_id": ..., "id": <uuid>}`."""
    try:
        fields = json.loads(payload)
        return Announcement(str(fields["user_id"]), uuid.UUID(str(fields["id"])))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an announcement: {payload[:200]!r}") from exc


class LiveFeed:
    def __init__(
        self, notifications: Notifications, sockets: Sockets, *, queue_size: int = QUEUE_SIZE
    ) -> None:
        self._notifications = notifications
        self._sockets = sockets
        self._queue: asyncio.Queue[Announcement] = asyncio.Queue(maxsize=queue_size)

    def announce(self, payload: str) -> None:
        """A NOTIFY on the channel; never waits."""
        try:
            self._queue.put_nowait(parse_announcement(payload))
        except ValueError as exc:
            log.warning("announcement ignored", extra={"error": str(exc)})
        except asyncio.QueueFull:
            self.lost("announcement queue full")

    def lost(self, why: str) -> None:
        """Announcements were lost: every client of this instance is sent back to the history."""
        closed = self._sockets.interrupt()
        log.warning("live feed interrupted", extra={"reason": why, "connections": closed})

    async def push(self) -> None:
        """Push announced notifications to the sockets of their users, until cancelled."""
        while True:
            announced = await self._queue.get()
            if not self._sockets.connections_of(announced.user_id):
                continue
            try:
                notification = await self._notifications.get(announced.notification_id)
            except Exception as exc:
                self.lost(f"reading an announced notification failed: {type(exc).__name__}")
                continue
            if notification is not None:
                self._sockets.publish(announced.user_id, notification.to_json())

    async def keep_listening(
        self, listener: Listener, interval_s: float = LISTEN_CHECK_INTERVAL_S
    ) -> None:
        """Listen again whenever the listening connection broke, until cancelled."""
        listened = listener.listening
        while True:
            if not listener.listening:
                if listened:
                    self.lost("LISTEN connection lost")
                listened = await listener.ensure()
            await asyncio.sleep(interval_s)

    @asynccontextmanager
    async def running(self, listener: Listener) -> AsyncIterator[None]:
        """Listening (from before the body starts, so nothing stored in it goes unannounced)
        and pushing while the body runs."""
        await listener.ensure()
        tasks = [
            asyncio.create_task(self.push(), name="live-feed-push"),
            asyncio.create_task(self.keep_listening(listener), name="live-feed-listen"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await listener.close()
