"""Use cases of the users service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from services.common import pagination
from services.common.errors import AlreadyExists, NotFound
from services.users import repository
from services.users.domain import (
    User,
    new_user,
    valid_block_reason,
    valid_user_id,
)

log = logging.getLogger(__name__)


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
            created = await repository.insert_user(conn, user)
            if created is None:
                raise AlreadyExists("a user with this email already exists")
            await user_changed(conn, "created", created)
        return created

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


async def user_changed(conn: asyncpg.Connection, change: str, user: User) -> None:
    """A user was created or blocked, inside the transaction that changed it.

    This is where the UserCreated and UserBlocked events go: written to the outbox on `conn`,
    so they commit or roll back with the change itself. For now the change is logged.
    """
    log.info(f"user {change}", extra={"user_id": user.id, "blocked": user.blocked})
