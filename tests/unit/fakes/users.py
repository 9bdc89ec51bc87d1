"""The users database in memory: a unique email in any letter case, and the outbox."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime

from contracts import EventType
from contracts.cloudevents import cloud_event
from services.common.messaging.envelope import Event, validate
from services.users.domain import User
from tests.unit.fakes.database import (
    Autocommit,
    FakeOutbox,
    OutboxMessage,
    Transactions,
    round_trip,
)


@dataclass
class UsersTables:
    users: dict[str, User] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)


class InMemoryUsers:
    def __init__(self, tables: UsersTables) -> None:
        self._tables = tables

    async def add(self, user: User) -> User | None:
        await round_trip()
        taken = {stored.email.lower() for stored in self._tables.users.values()}
        if user.email.lower() in taken:
            return None
        self._tables.users[user.id] = user
        return user

    async def get(self, user_id: str) -> User | None:
        await round_trip()
        return self._tables.users.get(user_id)

    async def block(self, user_id: str, reason: str) -> User | None:
        await round_trip()
        user = self._tables.users.get(user_id)
        if user is None or user.blocked:
            return None
        blocked = replace(user, blocked=True, blocked_reason=reason or None)
        self._tables.users[user_id] = blocked
        return blocked

    async def page(self, *, limit: int, after: tuple[datetime, str] | None) -> list[User]:
        await round_trip()
        ordered = sorted(self._tables.users.values(), key=lambda user: (user.created_at, user.id))
        if after is not None:
            ordered = [user for user in ordered if (user.created_at, user.id) > after]
        return ordered[:limit]


class InMemoryUsersUnitOfWork:
    def __init__(self, tables: UsersTables) -> None:
        self.users = InMemoryUsers(tables)
        self.outbox = FakeOutbox(tables.outbox)


class InMemoryUsersDatabase:
    def __init__(self) -> None:
        self.tables = UsersTables()
        self.transactions = Transactions(self.tables, InMemoryUsersUnitOfWork)
        self.users = Autocommit(self.transactions, lambda uow: uow.users)

    def transaction(self) -> AbstractAsyncContextManager[InMemoryUsersUnitOfWork]:
        return self.transactions.transaction()


def user_blocked(user_id: str, reason: str | None = None) -> Event:
    """The UserBlocked event users publishes, as a consumer receives it."""
    data = {"userId": user_id} if reason is None else {"userId": user_id, "reason": reason}
    event = cloud_event(
        source="users", type=EventType.USER_BLOCKED, subject=f"user/{user_id}", data=data
    )
    return validate(event)
