"""SQL of auth (asyncpg): signing keys, user credentials, clients. Thin: transactions belong to
the service layer, which opens them through `PostgresKeysDatabase.transaction()`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import asyncpg

from services.auth.domain import Client
from services.auth.tokens import SigningKey
from services.common.db import Connection
from services.common.uow import PostgresTransactions

# Serializes key creation and rotation across instances (advisory locks are per database).
KEYS_LOCK_KEY = 0x5348_4D45_4B45_5953  # "SHMEKEYS"

Executor = Connection | asyncpg.Pool


class PostgresSigningKeys:
    """Signing keys on `db`: the pool (each statement on its own) or the connection of a
    transaction."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def lock(self) -> None:
        """Hold the key lock until the end of the current transaction."""
        await self._db.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_KEY)

    async def active_kid(self) -> str | None:
        kid: str | None = await self._db.fetchval(
            "SELECT kid FROM signing_keys WHERE retired_at IS NULL"
        )
        return kid

    async def add(self, key: SigningKey) -> None:
        await self._db.execute(
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

    async def retire_active(self, now: datetime) -> str | None:
        kid: str | None = await self._db.fetchval(
            "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid", now
        )
        return kid

    async def delete_retired_before(self, cutoff: datetime) -> int:
        result = await self._db.execute("DELETE FROM signing_keys WHERE retired_at < $1", cutoff)
        return int(result.split()[-1])

    async def published(self, now: datetime, keep: timedelta) -> list[SigningKey]:
        """The active key and the keys retired within `keep` of `now`."""
        rows = await self._db.fetch(
            """
            SELECT kid, alg, private_key_pem, public_jwk, created_at, retired_at
            FROM signing_keys
            WHERE retired_at IS NULL OR retired_at > $1
            ORDER BY created_at
            """,
            now - keep,
        )
        return [SigningKey(**dict(row)) for row in rows]


class PostgresKeysUnitOfWork:
    """Signing keys on the connection of one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.signing_keys = PostgresSigningKeys(conn)


class PostgresKeysDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.signing_keys = PostgresSigningKeys(pool)
        self._transactions = PostgresTransactions(pool, PostgresKeysUnitOfWork)

    def transaction(self) -> AbstractAsyncContextManager[PostgresKeysUnitOfWork]:
        return self._transactions.transaction()


_UPSERT_PASSWORD_HASH = """
    INSERT INTO user_credentials (username, password_hash) VALUES ($1, $2)
    ON CONFLICT (username) DO UPDATE
    SET password_hash = EXCLUDED.password_hash, updated_at = now()
"""


class PostgresCredentials:
    """Users' password hashes and OAuth clients, on the pool: every write is one statement (or
    one statement batch), atomic on its own."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def password_hash(self, username: str) -> str | None:
        password_hash: str | None = await self._db.fetchval(
            "SELECT password_hash FROM user_credentials WHERE username = $1", username
        )
        return password_hash

    async def upsert_password_hash(self, username: str, password_hash: str) -> None:
        await self._db.execute(_UPSERT_PASSWORD_HASH, username, password_hash)

    async def upsert_password_hashes(self, hashes: Sequence[tuple[str, str]]) -> None:
        """(username, password hash) pairs, in one statement batch (atomic on its own)."""
        await self._db.executemany(_UPSERT_PASSWORD_HASH, hashes)

    async def get_client(self, client_id: str) -> Client | None:
        row = await self._db.fetchrow(
            "SELECT client_id, secret_hash, roles FROM clients WHERE client_id = $1", client_id
        )
        if row is None:
            return None
        return Client(row["client_id"], row["secret_hash"], frozenset(row["roles"]))

    async def upsert_client(self, client_id: str, secret_hash: str, roles: Sequence[str]) -> None:
        await self._db.execute(
            """
            INSERT INTO clients (client_id, secret_hash, roles) VALUES ($1, $2, $3)
            ON CONFLICT (client_id) DO UPDATE
            SET secret_hash = EXCLUDED.secret_hash, roles = EXCLUDED.roles, updated_at = now()
            """,
            client_id,
            secret_hash,
            list(roles),
        )
