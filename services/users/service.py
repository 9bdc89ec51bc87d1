"""Use cases of the users service."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.common import pagination
from services.common.errors import AlreadyExists, NotFound
from services.common.events import cloud_event
from services.common.messaging import outbox
from services.users import repository
from services.users.domain import (
    User,
    new_user,
    new_users,
    valid_block_reason,
    valid_user_id,
)

log = logging.getLogger(__name__)

TOPIC = "user-events"
USER_CREATED = "shopmesh.user.created.v1"
USER_BLOCKED = "shopmesh.user.blocked.v1"


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_page_token: str


class UserService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_user(self, user_id: str) -> User:
        user = await repository.get_user(self._pool, valid_user_id(user_id))
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        return user

    async def create_user(self, name: str, email: str) -> User:
        """A new user with the default roles; ALREADY_EXISTS when the email is taken."""
        user = new_user(name, email)
        async with self._pool.acquire() as conn, conn.transaction():
            return await insert_new_user(conn, user)

    async def batch_create_users(self, requests: Sequence[tuple[str, str]]) -> list[User]:
        """New users from (name, email) pairs, in request order, in one transaction: an email
        that is taken is ALREADY_EXISTS naming it, and none of the users is created."""
        users = new_users(requests)
        async with self._pool.acquire() as conn, conn.transaction():
            return [await insert_new_user(conn, user) for user in users]

    async def block_user(self, user_id: str, reason: str) -> User:
        """Block the user; blocking a blocked user returns it unchanged."""
        valid_user_id(user_id)
        reason = valid_block_reason(reason)
        async with self._pool.acquire() as conn, conn.transaction():
            blocked = await repository.block_user(conn, user_id, reason)
            if blocked is not None:
                await user_changed(conn, "blocked", blocked)
                return blocked
        return await self.get_user(user_id)

    async def list_users(self, page_size: int, page_token: str) -> UserPage:
        size = pagination.page_size(page_size)
        after = pagination.decode_page_token(page_token) if page_token else None
        users = await repository.list_users(self._pool, limit=size + 1, after=after)
        if len(users) <= size:
            return UserPage(users, "")
        page = users[:size]
        return UserPage(page, pagination.encode_page_token(page[-1].created_at, page[-1].id))


def user_event(change: str, user: User) -> dict:
    """The UserCreated or UserBlocked CloudEvent of `user` (keyed by the user id on Kafka)."""
    if change == "created":
        kind, data = USER_CREATED, {"userId": user.id, "name": user.name, "roles": list(user.roles)}
    elif change == "blocked":
        kind, data = USER_BLOCKED, {"userId": user.id, "reason": user.blocked_reason or ""}
    else:
        raise ValueError(f"unknown user change {change!r}")
    return cloud_event(source="users", type=kind, subject=f"user/{user.id}", data=data)


async def insert_new_user(conn: asyncpg.Connection, user: User) -> User:
    """Insert `user` and queue its created event, in `conn`'s transaction; ALREADY_EXISTS
    naming the email when it is taken."""
    created = await repository.insert_user(conn, user)
    if created is None:
        raise AlreadyExists(f"a user with the email {user.email!r} already exists")
    await user_changed(conn, "created", created)
    return created


async def user_changed(conn: asyncpg.Connection, change: str, user: User) -> None:
    """A user was created or blocked, inside the transaction that changed it: its event goes
    to the outbox on `conn`, so it commits or rolls back with the change itself."""
    event = user_event(change, user)
    await outbox.add(conn, TOPIC, user.id, event)
    log.info(
        f"user {change}",
        extra={"user_id": user.id, "blocked": user.blocked, "event_id": event["id"]},
    )
