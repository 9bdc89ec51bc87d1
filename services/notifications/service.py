"""Use cases of the notifications service: deliver an event, read a user's history."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.common.db import Connection
from services.common.messaging.envelope import Event
from services.notifications.domain import Notification, notification_from_event

log = logging.getLogger(__name__)


class Repository(Protocol):
    async def add(self, notification: Notification) -> bool:
        """Store `notification`; False if one with its id is already stored."""
        ...

    async def list_for_user(
        self, user_id: str, *, limit: int, after: uuid.UUID | None
    ) -> list[Notification]:
        """Newest first; with `after`, only those older than that notification.

        UnknownCursorError if `after` is not one of the user's notifications.
        """
        ...


class Push(Protocol):
    def publish(self, user_id: str, message: Mapping[str, Any]) -> int: ...


@dataclass(frozen=True)
class Delivery:
    notification_id: uuid.UUID
    duplicate: bool
    connections: int


def utc_now() -> datetime:
    return datetime.now(UTC)


class NotificationService:
    def __init__(
        self,
        repository: Repository,
        push: Push,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._repository = repository
        self._push = push
        self._clock = clock

    async def deliver(self, event: object) -> Delivery:
        """Store a CloudEvent as its user's notification, then push it to their live sockets.

        Idempotent by event id: an event already stored is neither stored nor pushed again.
        InvalidEventError if `event` is not a deliverable CloudEvent. The push happens after
        the insert commits, so a crash in between leaves the notification in the history only.
        """
        notification = notification_from_event(event, now=self._clock())
        extra = {
            "notification_id": str(notification.id),
            "user_id": notification.user_id,
            "event_type": notification.type,
        }
        if not await self._repository.add(notification):
            log.info("duplicate event ignored", extra=extra)
            return Delivery(notification.id, duplicate=True, connections=0)
        connections = self._push.publish(notification.user_id, notification.to_json())
        log.info("notification delivered", extra={**extra, "connections": connections})
        return Delivery(notification.id, duplicate=False, connections=connections)

    async def on_event(self, _conn: Connection, event: Event) -> Delivery:
        """Consumer group `notifications`: deliver each event from Kafka to its user."""
        return await self.deliver(event.attributes)

    async def history(
        self, user_id: str, *, limit: int, after: uuid.UUID | None = None
    ) -> list[Notification]:
        return await self._repository.list_for_user(user_id, limit=limit, after=after)
