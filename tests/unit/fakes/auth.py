"""Auth's credentials and signing keys in memory, and a fake of the users client auth calls."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import grpc

from services.auth import passwords
from services.auth.clients import UnknownUser, UserInfo, UsersUnavailable
from services.auth.domain import Client
from services.auth.login_limits import AttemptKey, Count
from services.auth.sign_in import Code, Family, PendingRequest, RefreshToken, Session, Used
from services.auth.tokens import SigningKey
from tests.unit.fakes.database import Autocommit, Transactions, round_trip

# Cheap hashes for tests: `passwords.verify` reads the cost from the stored hash.
TEST_COST = 2**4


class InMemoryCredentials:
    """Users' password hashes and OAuth clients; every write is atomic on its own."""

    def __init__(self) -> None:
        self.password_hashes: dict[str, str] = {}
        self.clients: dict[str, Client] = {}

    def set_password(self, username: str, password: str) -> None:
        self.password_hashes[username] = passwords.hash_secret(password, n=TEST_COST)

    def add_client(self, client_id: str, secret: str, roles: Sequence[str]) -> None:
        secret_hash = passwords.hash_secret(secret, n=TEST_COST)
        self.clients[client_id] = Client(client_id, secret_hash, frozenset(roles))

    async def get_client(self, client_id: str) -> Client | None:
        await round_trip()
        return self.clients.get(client_id)

    async def password_hash(self, username: str) -> str | None:
        await round_trip()
        return self.password_hashes.get(username)

    async def upsert_password_hashes(self, hashes: Sequence[tuple[str, str]]) -> None:
        await round_trip()
        self.password_hashes.update(hashes)


@dataclass
class KeysTables:
    keys: dict[str, SigningKey] = field(default_factory=dict)


class InMemorySigningKeys:
    """Signing keys; each call is written to `statements`, so a test can see the lock taken
    first. Like the table's partial unique index, a second next key (not scheduled) is
    refused."""

    def __init__(self, tables: KeysTables, statements: list[str]) -> None:
        self._tables = tables
        self._statements = statements

    async def lock(self) -> None:
        await self._sent("lock")

    async def all(self) -> list[SigningKey]:
        await self._sent("all")
        return sorted(self._tables.keys.values(), key=lambda key: key.created_at)

    async def add(self, key: SigningKey) -> None:
        await self._sent("add")
        if key.kid in self._tables.keys:
            raise ValueError(f"duplicate kid {key.kid}")
        if key.active_from is None and any(
            k.active_from is None for k in self._tables.keys.values()
        ):
            raise ValueError("a second next signing key")
        self._tables.keys[key.kid] = key

    async def schedule(self, kid: str, active_from: datetime) -> None:
        await self._sent("schedule")
        self._tables.keys[kid] = replace(self._tables.keys[kid], active_from=active_from)

    async def delete(self, kids: Sequence[str]) -> int:
        await self._sent("delete")
        deleted = [kid for kid in kids if self._tables.keys.pop(kid, None) is not None]
        return len(deleted)

    async def _sent(self, statement: str) -> None:
        await round_trip()
        self._statements.append(statement)


class InMemoryKeysUnitOfWork:
    def __init__(self, tables: KeysTables, statements: list[str]) -> None:
        self.signing_keys = InMemorySigningKeys(tables, statements)


class InMemoryKeysDatabase:
    def __init__(self) -> None:
        self.tables = KeysTables()
        self.statements: list[str] = []
        self.transactions = Transactions(
            self.tables, lambda tables: InMemoryKeysUnitOfWork(tables, self.statements)
        )
        self.signing_keys = Autocommit(self.transactions, lambda uow: uow.signing_keys)

    def transaction(self) -> AbstractAsyncContextManager[InMemoryKeysUnitOfWork]:
        return self.transactions.transaction()


class FakeUsersDirectory:
    """users.GetUser as auth calls it: the users given, each with their roles."""

    def __init__(self, **roles: Sequence[str]) -> None:
        self.users = {
            user_id: UserInfo(user_id, frozenset(r), False) for user_id, r in roles.items()
        }
        self.down = False

    def block(self, user_id: str) -> None:
        self.users[user_id] = replace(self.users[user_id], blocked=True)

    async def get_user(self, user_id: str) -> UserInfo:
        await round_trip()
        if self.down:
            error = grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
            raise UsersUnavailable(error)
        if user_id not in self.users:
            raise UnknownUser(user_id)
        return self.users[user_id]


class InMemoryLoginAttempts:
    """The password grant's attempt counts; each call atomic, as each statement is in
    Postgres (a round trip first, so concurrent grants interleave between calls)."""

    def __init__(self) -> None:
        self.windows: dict[AttemptKey, tuple[datetime, int]] = {}

    async def count(
        self, keys: Sequence[AttemptKey], now: datetime, window: timedelta
    ) -> list[Count]:
        await round_trip()
        counts = []
        for key in keys:
            start, attempts = self.windows.get(key, (now, 0))
            if start <= now - window:
                start, attempts = now, 0
            self.windows[key] = (start, attempts + 1)
            counts.append(Count(key, start, attempts + 1))
        return counts

    async def uncount(self, counts: Sequence[Count]) -> None:
        await round_trip()
        for count in counts:
            start, attempts = self.windows.get(count.key, (count.window_start, 0))
            if start == count.window_start and attempts > 0:
                self.windows[count.key] = (start, attempts - 1)

    async def prune(self, before: datetime) -> int:
        await round_trip()
        old = [key for key, (start, _) in self.windows.items() if start < before]
        for key in old:
            del self.windows[key]
        return len(old)

    def attempts(self, key: AttemptKey) -> int:
        return self.windows.get(key, (None, 0))[1]


class InMemorySignIn:
    """Sessions, pending requests, codes and refresh-token families (services/auth/sign_in.py);
    each call atomic, as each statement is in Postgres."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.pending_requests: dict[str, PendingRequest] = {}
        self.families: dict[str, Family] = {}
        self.codes: dict[str, tuple[Code, bool]] = {}
        self.refresh_tokens: dict[str, tuple[RefreshToken, bool]] = {}

    async def add_session(self, session: Session) -> None:
        await round_trip()
        self.sessions[session.id_hash] = session

    async def session(self, id_hash: str) -> Session | None:
        await round_trip()
        return self.sessions.get(id_hash)

    async def delete_session(self, id_hash: str) -> None:
        await round_trip()
        self.sessions.pop(id_hash, None)

    async def add_pending(self, pending: PendingRequest) -> None:
        await round_trip()
        self.pending_requests[pending.id_hash] = pending

    async def pending(self, id_hash: str) -> PendingRequest | None:
        await round_trip()
        return self.pending_requests.get(id_hash)

    async def delete_pending(self, id_hash: str) -> None:
        await round_trip()
        self.pending_requests.pop(id_hash, None)

    async def add_family(self, family: Family) -> None:
        await round_trip()
        self.families[family.family_id] = family

    async def family(self, family_id: str) -> Family | None:
        await round_trip()
        return self.families.get(family_id)

    async def revoke_family(self, family_id: str) -> None:
        await round_trip()
        self.families[family_id] = replace(self.families[family_id], revoked=True)

    async def revoke_session_families(self, session_hash: str) -> int:
        await round_trip()
        live = [
            f for f in self.families.values() if f.session_hash == session_hash and not f.revoked
        ]
        for family in live:
            self.families[family.family_id] = replace(family, revoked=True)
        return len(live)

    async def add_code(self, code: Code) -> None:
        await round_trip()
        self.codes[code.code_hash] = (code, False)

    async def code(self, code_hash: str) -> Code | None:
        await round_trip()
        stored = self.codes.get(code_hash)
        return None if stored is None else stored[0]

    async def use_code(self, code_hash: str) -> Used[Code] | None:
        await round_trip()
        if code_hash not in self.codes:
            return None
        code, used = self.codes[code_hash]
        self.codes[code_hash] = (code, True)
        return Used(code, already_used=used)

    async def add_refresh_token(self, token: RefreshToken) -> None:
        await round_trip()
        self.refresh_tokens[token.token_hash] = (token, False)

    async def use_refresh_token(self, token_hash: str) -> Used[RefreshToken] | None:
        await round_trip()
        if token_hash not in self.refresh_tokens:
            return None
        token, used = self.refresh_tokens[token_hash]
        self.refresh_tokens[token_hash] = (token, True)
        return Used(token, already_used=used)

    async def refresh_token(self, token_hash: str) -> RefreshToken | None:
        await round_trip()
        stored = self.refresh_tokens.get(token_hash)
        return None if stored is None else stored[0]

    async def revoke_user(self, user_id: str) -> int:
        await round_trip()
        live = [f for f in self.families.values() if f.user_id == user_id and not f.revoked]
        for family in live:
            self.families[family.family_id] = replace(family, revoked=True)
        sessions = [k for k, s in self.sessions.items() if s.user_id == user_id]
        for key in sessions:
            del self.sessions[key]
        return len(live) + len(sessions)

    async def prune(self, now: float) -> int:
        await round_trip()
        expired = [
            *(("s", k) for k, s in self.sessions.items() if s.expires_at < now),
            *(("p", k) for k, p in self.pending_requests.items() if p.expires_at < now),
            *(("f", k) for k, f in self.families.items() if f.expires_at < now),
        ]
        tables: dict[str, dict[str, Any]] = {
            "s": self.sessions, "p": self.pending_requests, "f": self.families,
        }  # fmt: skip
        for table, key in expired:
            del tables[table][key]
        gone = {key for table, key in expired if table == "f"}
        self.codes = {k: v for k, v in self.codes.items() if v[0].family_id not in gone}
        self.refresh_tokens = {
            k: v for k, v in self.refresh_tokens.items() if v[0].family_id not in gone
        }
        return len(expired)
