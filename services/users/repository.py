"""SQL for users. Thin: transactions belong to the service layer."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.users.domain import User

_COLUMNS = "id, name, email, roles, blocked, blocked_reason, created_at"

Executor = asyncpg.Connection | asyncpg.Pool


async def insert_user(conn: Executor, user: User) -> User | None:
    """Insert `user`; None if its email is already taken (compared case-insensitively)."""
    row = await conn.fetchrow(
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


async def get_user(conn: Executor, user_id: str) -> User | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
    return None if row is None else _user(row)


async def block_user(conn: Executor, user_id: str, reason: str) -> User | None:
    """Block the user if it is not blocked yet; None when nothing changed (blocked or absent)."""
    row = await conn.fetchrow(
        f"""
        UPDATE users SET blocked = true, blocked_reason = $2
        WHERE id = $1 AND NOT blocked
        RETURNING {_COLUMNS}
        """,
        user_id,
        reason or None,
    )
    return None if row is None else _user(row)


async def list_users(
    conn: Executor, *, limit: int, after: tuple[datetime, str] | None
) -> list[User]:
    """Up to `limit` users ordered by (created_at, id), strictly after `after`."""
    if after is None:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
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
