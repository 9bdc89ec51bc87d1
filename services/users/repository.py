"""SQL for users (asyncpg). Thin: transactions belong to the service layer, which opens them
through `PostgresUsersDatabase.transaction()`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime

import asyncpg

from services.common.db import Connection
from services.common.uow import PostgresOutbox, PostgresTransactions
from services.users.domain import User

_COLUMNS = "id, name, email, roles, blocked, blocked_reason, created_at"

Executor = Connection | asyncpg.Pool


class PostgresUsers:
    """Users on `db`: the pool (each statement on its own) or the connection of a transaction."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def add(self, user: User) -> User | None:
        """Insert `user`; None if its email is already taken (compared case-insensitively)."""
        row = await self._db.fetchrow(
            f"""
            INSERT INTO users ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT ((lower(email))) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            user.id,
            user.name,
            user.email,
            list(user.roles),
            user.blocked,
            user.blocked_reason,
            user.created_at,
        )
        return None if row is None else _user(row)

    async def get(self, user_id: str) -> User | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else _user(row)

    async def block(self, user_id: str, reason: str) -> User | None:
        """Block the user if it is not blocked yet; None when nothing changed (blocked or
        absent)."""
        row = await self._db.fetchrow(
            f"""
            UPDATE users SET blocked = true, blocked_reason = $2
            WHERE id = $1 AND NOT blocked
            RETURNING {_COLUMNS}
            """,
            user_id,
            reason or None,
        )
        return None if row is None else _user(row)

    async def page(self, *, limit: int, after: tuple[datetime, str] | None) -> list[User]:
        """Up to `limit` users ordered by (created_at, id), strictly after `after`."""
        if after is None:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1", limit
            )
        else:
            rows = await self._db.fetch(
                f"""
                SELECT {_COLUMNS} FROM users
                WHERE (created_at, id) > ($1, $2)
                ORDER BY created_at, id LIMIT $3
                """,
                after[0],
                after[1],
                limit,
            )
        return [_user(row) for row in rows]


class PostgresUsersUnitOfWork:
    """Users and the outbox on the connection of one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.users = PostgresUsers(conn)
        self.outbox = PostgresOutbox(conn)


class PostgresUsersDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.users = PostgresUsers(pool)
        self._transactions = PostgresTransactions(pool, PostgresUsersUnitOfWork)

    def transaction(self) -> AbstractAsyncContextManager[PostgresUsersUnitOfWork]:
        return self._transactions.transaction()


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        roles=tuple(row["roles"]),
        blocked=row["blocked"],
        blocked_reason=row["blocked_reason"],
        created_at=row["created_at"],
    )
