"""Use cases of the users service."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from contracts import Topic, user_blocked, user_created
from services.common import pagination
from services.common.errors import AlreadyExists, NotFound
from services.common.uow import Outbox
from services.users.domain import (
    User,
    new_user,
    new_users,
    valid_block_reason,
    valid_user_id,
)

log = logging.getLogger(__name__)


class UserRepository(Protocol):
    async def add(self, user: User) -> User | None:
        """Insert `user`; None if its email is already taken (in any letter case)."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def block(self, user_id: str, reason: str) -> User | None:
        """Block the user if it is not blocked yet; None when nothing changed (blocked or
        absent)."""
        ...

    async def page(self, *, limit: int, after: tuple[datetime, str] | None) -> list[User]:
        """Up to `limit` users ordered by (created_at, id), strictly after `after`."""
        ...


class UsersUnitOfWork(Protocol):
    """One transaction: the users and the outbox events written through it commit together."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def outbox(self) -> Outbox: ...


class UsersDatabase(Protocol):
    @property
    def users(self) -> UserRepository:
        """Outside any transaction: each call on its own."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[UsersUnitOfWork]:
        """A unit of work: committed when the `async with` block ends, rolled back when it
        raises."""
        ...


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_page_token: str


class UserService:
    def __init__(self, database: UsersDatabase) -> None:
        self._db = database

    async def get_user(self, user_id: str) -> User:
        user = await self._db.users.get(valid_user_id(user_id))
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        return user

    async def create_user(self, name: str, email: str) -> User:
        """A new user with the default roles; ALREADY_EXISTS when the email is taken."""
        user = new_user(name, email)
        async with self._db.transaction() as uow:
            return await insert_new_user(uow, user)

    async def batch_create_users(self, requests: Sequence[tuple[str, str]]) -> list[User]:
        """New users from (name, email) pairs, in request order, in one transaction: an email
        that is taken is ALREADY_EXISTS naming it, and none of the users is created."""
        users = new_users(requests)
        async with self._db.transaction() as uow:
            return [await insert_new_user(uow, user) for user in users]

    async def block_user(self, user_id: str, reason: str) -> User:
        """Block the user; blocking a blocked user returns it unchanged."""
        valid_user_id(user_id)
        reason = valid_block_reason(reason)
        async with self._db.transaction() as uow:
            blocked = await uow.users.block(user_id, reason)
            if blocked is not None:
                await user_changed(uow.outbox, "blocked", blocked)
                return blocked
        return await self.get_user(user_id)

    async def list_users(self, page_size: int, page_token: str) -> UserPage:
        size = pagination.page_size(page_size)
        after = pagination.decode_page_token(page_token) if page_token else None
        users = await self._db.users.page(limit=size + 1, after=after)
        if len(users) <= size:
            return UserPage(users, "")
        page = users[:size]
        return UserPage(page, pagination.encode_page_token(page[-1].created_at, page[-1].id))


def user_event(change: str, user: User) -> dict[str, Any]:
    """The UserCreated or UserBlocked CloudEvent of `user` (keyed by the user id on Kafka)."""
    if change == "created":
        return user_created(user_id=user.id, name=user.name, roles=user.roles)
    if change == "blocked":
        return user_blocked(user_id=user.id, reason=user.blocked_reason or "")
    raise ValueError(f"unknown user change {change!r}")


async def insert_new_user(uow: UsersUnitOfWork, user: User) -> User:
    """Insert `user` and queue its created event, in the unit of work; ALREADY_EXISTS naming
    the email when it is taken."""
    created = await uow.users.add(user)
    if created is None:
        raise AlreadyExists(f"a user with the email {user.email!r} already exists")
    await user_changed(uow.outbox, "created", created)
    return created


async def user_changed(outbox: Outbox, change: str, user: User) -> None:
    """A user was created or blocked, inside the unit of work that changed it: its event goes
    to the unit of work's outbox, so it commits or rolls back with the change itself."""
    event = user_event(change, user)
    await outbox.add(Topic.USER_EVENTS, user.id, event)
    log.info(
        f"user {change}",
        extra={"user_id": user.id, "blocked": user.blocked, "event_id": event["id"]},
    )
