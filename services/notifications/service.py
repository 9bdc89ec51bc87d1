"""Use cases of the notifications service: store an event as its user's notification, read a
user's history. Pushing stored notifications to live sockets is the live feed's
(services/notifications/live.py), on every instance."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from services.common.db import Connection
from services.common.messaging.envelope import Event
from services.notifications.domain import Notification, notification_from_event

log = logging.getLogger(__name__)


class Repository(Protocol):
    async def add(self, notification: Notification) -> bool:
        """Store `notification` and, once that commits, announce it to every instance's live
        feed; False (and no announcement) if one with its id is already stored."""
        ...

    async def get(self, notification_id: uuid.UUID) -> Notification | None: ...

    async def list_for_user(
        self, user_id: str, *, limit: int, after: uuid.UUID | None
    ) -> list[Notification]:
        """Newest first; with `after`, only those older than that notification.

        UnknownCursorError if `after` is not one of the user's notifications.
        """
        ...


@dataclass(frozen=True)
class Delivery:
    notification_id: uuid.UUID
    duplicate: bool


def utc_now() -> datetime:
    return datetime.now(UTC)


class NotificationService:
    def __init__(
        self,
        repository: Repository,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._repository = repository
        self._clock = clock

    async def deliver(self, event: object) -> Delivery:
        """Store a CloudEvent as its user's notification; the repository announces it to the
        live feed of every instance once the insert commits.

        Idempotent by event id: an event already stored is neither stored nor announced again.
        InvalidEventError if `event` is not a deliverable CloudEvent.
        """
        notification = notification_from_event(event, now=self._clock())
        extra = {
            "notification_id": str(notification.id),
            "user_id": notification.user_id,
            "event_type": notification.type,
        }
        if not await self._repository.add(notification):
            log.info("duplicate event ignored", extra=extra)
            return Delivery(notification.id, duplicate=True)
        log.info("notification stored", extra=extra)
        return Delivery(notification.id, duplicate=False)

    async def on_event(self, _conn: Connection, event: Event) -> Delivery:
        """Consumer group `notifications`: deliver each event from Kafka to its user."""
        return await self.deliver(event.attributes)

    async def history(
        self, user_id: str, *, limit: int, after: uuid.UUID | None = None
    ) -> list[Notification]:
        return await self._repository.list_for_user(user_id, limit=limit, after=after)
