"""SQL of signing in (services/auth/sign_in.py), on the pool: every call is one statement,
atomic on its own. Times are epoch seconds in the service layer, timestamptz here."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from services.auth.authorization import AuthorizationRequest
from services.auth.sign_in import Code, Family, PendingRequest, RefreshToken, Session, Used


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _epoch(at: datetime) -> float:
    return at.timestamp()


class PostgresSignIn:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._db = pool

    async def add_session(self, session: Session) -> None:
        await self._db.execute(
            "INSERT INTO auth_sessions (id_hash, user_id, auth_time, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            session.id_hash,
            session.user_id,
            _at(session.auth_time),
            _at(session.expires_at),
        )

    async def session(self, id_hash: str) -> Session | None:
        row = await self._db.fetchrow(
            "SELECT id_hash, user_id, auth_time, expires_at FROM auth_sessions WHERE id_hash = $1",
            id_hash,
        )
        if row is None:
            return None
        return Session(
            row["id_hash"],
            row["user_id"],
            int(_epoch(row["auth_time"])),
            _epoch(row["expires_at"]),
        )

    async def delete_session(self, id_hash: str) -> None:
        await self._db.execute("DELETE FROM auth_sessions WHERE id_hash = $1", id_hash)

    async def add_pending(self, pending: PendingRequest) -> None:
        request = pending.request
        await self._db.execute(
            """
            INSERT INTO authorization_requests (id_hash, browser_hash, client_id, redirect_uri,
                scope, state, nonce, code_challenge, prompt, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            """,
            pending.id_hash,
            pending.browser_hash,
            request.client_id,
            request.redirect_uri,
            list(request.scope),
            request.state,
            request.nonce,
            request.code_challenge,
            request.prompt,
            _at(pending.expires_at),
        )

    async def pending(self, id_hash: str) -> PendingRequest | None:
        row = await self._db.fetchrow(
            "SELECT * FROM authorization_requests WHERE id_hash = $1", id_hash
        )
        if row is None:
            return None
        request = AuthorizationRequest(
            client_id=row["client_id"],
            redirect_uri=row["redirect_uri"],
            scope=tuple(row["scope"]),
            state=row["state"],
            nonce=row["nonce"],
            code_challenge=row["code_challenge"],
            prompt=row["prompt"],
        )
        return PendingRequest(
            row["id_hash"], row["browser_hash"], request, _epoch(row["expires_at"])
        )

    async def delete_pending(self, id_hash: str) -> None:
        await self._db.execute("DELETE FROM authorization_requests WHERE id_hash = $1", id_hash)

    async def add_family(self, family: Family) -> None:
        await self._db.execute(
            """
            INSERT INTO refresh_families (family_id, client_id, user_id, scope, auth_time,
                session_hash, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """,
            family.family_id,
            family.client_id,
            family.user_id,
            list(family.scope),
            _at(family.auth_time),
            family.session_hash,
            _at(family.expires_at),
        )

    async def family(self, family_id: str) -> Family | None:
        row = await self._db.fetchrow(
            "SELECT * FROM refresh_families WHERE family_id = $1", family_id
        )
        if row is None:
            return None
        return Family(
            family_id=str(row["family_id"]),
            client_id=row["client_id"],
            user_id=row["user_id"],
            scope=tuple(row["scope"]),
            auth_time=int(_epoch(row["auth_time"])),
            session_hash=row["session_hash"],
            expires_at=_epoch(row["expires_at"]),
            revoked=row["revoked_at"] is not None,
        )

    async def revoke_family(self, family_id: str) -> None:
        await self._db.execute(
            "UPDATE refresh_families SET revoked_at = now()"
            " WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
        )

    async def revoke_session_families(self, session_hash: str) -> int:
        result = await self._db.execute(
            "UPDATE refresh_families SET revoked_at = now()"
            " WHERE session_hash = $1 AND revoked_at IS NULL",
            session_hash,
        )
        return int(result.split()[-1])

    async def add_code(self, code: Code) -> None:
        await self._db.execute(
            """
            INSERT INTO authorization_codes (code_hash, family_id, redirect_uri, code_challenge,
                nonce, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            code.code_hash,
            code.family_id,
            code.redirect_uri,
            code.code_challenge,
            code.nonce,
            _at(code.expires_at),
        )

    async def code(self, code_hash: str) -> Code | None:
        row = await self._db.fetchrow(
            "SELECT * FROM authorization_codes WHERE code_hash = $1", code_hash
        )
        return None if row is None else _code(row)

    async def use_code(self, code_hash: str) -> Used[Code] | None:
        row, already_used = await self._use("authorization_codes", "code_hash", code_hash)
        return None if row is None else Used(_code(row), already_used)

    async def add_refresh_token(self, token: RefreshToken) -> None:
        await self._db.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
            token.token_hash,
            token.family_id,
            _at(token.expires_at),
        )

    async def use_refresh_token(self, token_hash: str) -> Used[RefreshToken] | None:
        row, already_used = await self._use("refresh_tokens", "token_hash", token_hash)
        return None if row is None else Used(_refresh_token(row), already_used)

    async def _use(self, table: str, key: str, value: str) -> tuple[asyncpg.Record | None, bool]:
        """Mark a single-use row used: (the row, whether it already was). Of two concurrent
        uses, the second waits for the first's row lock and then no longer matches
        `used_at IS NULL`, so only one is ever first."""
        row = await self._db.fetchrow(
            f"UPDATE {table} SET used_at = now() WHERE {key} = $1 AND used_at IS NULL RETURNING *",
            value,
        )
        if row is not None:
            return row, False
        row = await self._db.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", value)
        return row, row is not None

    async def refresh_token(self, token_hash: str) -> RefreshToken | None:
        row = await self._db.fetchrow(
            "SELECT * FROM refresh_tokens WHERE token_hash = $1", token_hash
        )
        return None if row is None else _refresh_token(row)

    async def revoke_user(self, user_id: str) -> int:
        families = await self._db.execute(
            "UPDATE refresh_families SET revoked_at = now()"
            " WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
        )
        sessions = await self._db.execute("DELETE FROM auth_sessions WHERE user_id = $1", user_id)
        return int(families.split()[-1]) + int(sessions.split()[-1])

    async def prune(self, now: float) -> int:
        """Expired sessions, requests and families (their codes and tokens go with them)."""
        deleted = 0
        for table in ("auth_sessions", "authorization_requests", "refresh_families"):
            result = await self._db.execute(f"DELETE FROM {table} WHERE expires_at < $1", _at(now))
            deleted += int(result.split()[-1])
        return deleted


def _code(row: asyncpg.Record) -> Code:
    return Code(
        row["code_hash"],
        str(row["family_id"]),
        row["redirect_uri"],
        row["code_challenge"],
        row["nonce"],
        _epoch(row["expires_at"]),
    )


def _refresh_token(row: asyncpg.Record) -> RefreshToken:
    return RefreshToken(row["token_hash"], str(row["family_id"]), _epoch(row["expires_at"]))
