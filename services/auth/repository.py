"""SQL of auth (asyncpg): signing keys, user credentials, clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.auth.tokens import SigningKey

# Serializes key creation and rotation across instances (advisory locks are per database).
KEYS_LOCK_KEY = 0x5348_4D45_4B45_5953  # "SHMEKEYS"

Executor = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Client:
    client_id: str
    secret_hash: str
    roles: frozenset[str]


async def lock_keys(conn: asyncpg.Connection) -> None:
    """Hold the key lock until the end of the current transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_KEY)


async def active_kid(conn: asyncpg.Connection) -> str | None:
    return await conn.fetchval("SELECT kid FROM signing_keys WHERE retired_at IS NULL")


async def insert_key(conn: asyncpg.Connection, key: SigningKey) -> None:
    await conn.execute(
        """
        INSERT INTO signing_keys (kid, alg, private_key_pem, public_jwk, created_at, retired_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        key.kid,
        key.alg,
        key.private_key_pem,
        key.public_jwk,
        key.created_at,
        key.retired_at,
    )


async def retire_active_key(conn: asyncpg.Connection, now: datetime) -> str | None:
    return await conn.fetchval(
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid", now
    )


async def delete_keys_retired_before(conn: asyncpg.Connection, cutoff: datetime) -> int:
    result = await conn.execute("DELETE FROM signing_keys WHERE retired_at < $1", cutoff)
    return int(result.split()[-1])


async def published_keys(db: Executor, now: datetime, keep: timedelta) -> list[SigningKey]:
    """The active key and the keys retired within `keep` of `now`."""
    rows = await db.fetch(
        """
        SELECT kid, alg, private_key_pem, public_jwk, created_at, retired_at
        FROM signing_keys
        WHERE retired_at IS NULL OR retired_at > $1
        ORDER BY created_at
        """,
        now - keep,
    )
    return [SigningKey(**dict(row)) for row in rows]


async def password_hash(db: Executor, username: str) -> str | None:
    return await db.fetchval(
        "SELECT password_hash FROM user_credentials WHERE username = $1", username
    )


_UPSERT_PASSWORD_HASH = """
    INSERT INTO user_credentials (username, password_hash) VALUES ($1, $2)
    ON CONFLICT (username) DO UPDATE
    SET password_hash = EXCLUDED.password_hash, updated_at = now()
"""


async def upsert_password_hash(db: Executor, username: str, password_hash: str) -> None:
    await db.execute(_UPSERT_PASSWORD_HASH, username, password_hash)


async def upsert_password_hashes(db: Executor, hashes: Sequence[tuple[str, str]]) -> None:
    """(username, password hash) pairs, in one statement batch (atomic on its own)."""
    await db.executemany(_UPSERT_PASSWORD_HASH, hashes)


async def get_client(db: Executor, client_id: str) -> Client | None:
    row = await db.fetchrow(
        "SELECT client_id, secret_hash, roles FROM clients WHERE client_id = $1", client_id
    )
    if row is None:
        return None
    return Client(row["client_id"], row["secret_hash"], frozenset(row["roles"]))


async def upsert_client(
    db: Executor, client_id: str, secret_hash: str, roles: Sequence[str]
) -> None:
    await db.execute(
        """
        INSERT INTO clients (client_id, secret_hash, roles) VALUES ($1, $2, $3)
        ON CONFLICT (client_id) DO UPDATE
        SET secret_hash = EXCLUDED.secret_hash, roles = EXCLUDED.roles, updated_at = now()
        """,
        client_id,
        secret_hash,
        list(roles),
    )
