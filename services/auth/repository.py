"""SQL of auth (asyncpg): signing keys, user credentials, clients. Thin: transactions belong to
the service layer, which opens them through `PostgresKeysDatabase.transaction()`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import asyncpg

from services.auth.domain import Client
from services.auth.login_limits import AttemptKey, Count, Scope
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

    async def all(self) -> list[SigningKey]:
        rows = await self._db.fetch(
            """
            SELECT kid, alg, private_key_pem, public_jwk, created_at, active_from
            FROM signing_keys ORDER BY created_at
            """
        )
        return [SigningKey(**dict(row)) for row in rows]

    async def add(self, key: SigningKey) -> None:
        await self._db.execute(
            """
            INSERT INTO signing_keys
                (kid, alg, private_key_pem, public_jwk, created_at, active_from)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            key.kid,
            key.alg,
            key.private_key_pem,
            key.public_jwk,
            key.created_at,
            key.active_from,
        )

    async def schedule(self, kid: str, active_from: datetime) -> None:
        await self._db.execute(
            "UPDATE signing_keys SET active_from = $2 WHERE kid = $1", kid, active_from
        )

    async def delete(self, kids: Sequence[str]) -> int:
        if not kids:
            return 0
        result = await self._db.execute(
            "DELETE FROM signing_keys WHERE kid = ANY($1::text[])", list(kids)
        )
        return int(result.split()[-1])


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


class PostgresLoginAttempts:
    """The password grant's attempt counts (services/auth/login_limits.py) on the pool: each
    call is one statement, atomic on its own, so instances counting the same key at once never
    lose a count."""

    def __init__(self, db: Executor) -> None:
        self._db = db

    async def count(
        self, keys: Sequence[AttemptKey], now: datetime, window: timedelta
    ) -> list[Count]:
        rows = await self._db.fetch(
            """
            INSERT INTO login_attempts AS a (scope, key, window_start, attempts)
            SELECT scope, key, $3, 1 FROM unnest($1::text[], $2::text[]) AS t (scope, key)
            ON CONFLICT (scope, key) DO UPDATE SET
                window_start = CASE WHEN a.window_start <= $3 - $4::interval
                                    THEN $3 ELSE a.window_start END,
                attempts = CASE WHEN a.window_start <= $3 - $4::interval
                                THEN 1 ELSE a.attempts + 1 END
            RETURNING scope, key, window_start, attempts
            """,
            [key.scope.value for key in keys],
            [key.key for key in keys],
            now,
            window,
        )
        counted = {
            AttemptKey(Scope(row["scope"]), row["key"]): (row["window_start"], row["attempts"])
            for row in rows
        }
        return [Count(key, *counted[key]) for key in keys]

    async def uncount(self, counts: Sequence[Count]) -> None:
        await self._db.execute(
            """
            UPDATE login_attempts AS a SET attempts = a.attempts - 1
            FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS t (scope, key, window_start)
            WHERE a.scope = t.scope AND a.key = t.key AND a.window_start = t.window_start
              AND a.attempts > 0
            """,
            [count.key.scope.value for count in counts],
            [count.key.key for count in counts],
            [count.window_start for count in counts],
        )

    async def prune(self, before: datetime) -> int:
        result = await self._db.execute(
            "DELETE FROM login_attempts WHERE window_start < $1", before
        )
        return int(result.split()[-1])
