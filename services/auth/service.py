"""Use cases of auth: grants, exchange, introspection, the edge's ext_authz check, passwords set
by an admin. The signing keys they sign with are services.auth.keys'."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from contracts import EventType
from services.auth import passwords
from services.auth.blocks import RecentBlocks
from services.auth.cache import CachedExchange, ExchangeCache, token_key
from services.auth.clients import UnknownUser, UserInfo, UsersUnavailable
from services.auth.credentials import Credential
from services.auth.domain import Client
from services.auth.keys import Clock, KeyStore, Rotation
from services.auth.known_users import KnownUsers
from services.auth.login_limits import LoginLimiter, TooManyFailedLogins
from services.auth.oauth import PUBLIC_CLIENT_ID, ClientCredentials
from services.auth.tokens import (
    EXTERNAL_AUDIENCE,
    EXTERNAL_TTL_S,
    GTY_CLIENT_CREDENTIALS,
    GTY_PASSWORD,
    external_claims,
    internal_claims,
)
from services.common.auth.jwt import INTERNAL_AUDIENCE, INTERNAL_ISSUER, verify_jwt
from services.common.auth.principal import Unauthenticated
from services.common.db import Connection
from services.common.errors import NotFound, Unavailable
from services.common.messaging.envelope import Event
from services.common.single_flight import SingleFlight

log = logging.getLogger(__name__)

# The edge stops reusing an exchanged token this many seconds before it expires.
REUSE_MARGIN_S = 5
# The client address of a password grant that came to auth's own port, not through the edge.
UNKNOWN_ADDRESS = "unknown"
# The message of every "users cannot say now": Unavailable.
USERS_UNAVAILABLE = "auth cannot check the users now; retry later"
# UnknownUsers' message names this many of them; its fields name them all.
MAX_NAMED_UNKNOWN_USERS = 5

# Bulk passwords: users answers this many lookups at once; scrypt releases the GIL, so two
# hashes run on two cores while the default executor keeps threads for logins.
USER_LOOKUPS_AT_ONCE = 32
HASHES_AT_ONCE = 2

# The claims an active token's introspection answer repeats (RFC 7662 §2.2).
INTROSPECTED_CLAIMS = (
    "sub",
    "exp",
    "iat",
    "nbf",
    "aud",
    "iss",
    "jti",
    "scope",
    "client_id",
    "roles",
)

T = TypeVar("T")
R = TypeVar("R")


class InvalidClient(Exception):
    """Client authentication failed (unknown client or wrong secret)."""


class InvalidCredentials(Exception):
    """Unknown username or wrong password (the two are not told apart)."""


class UserBlocked(Exception):
    """The user exists but is blocked: no tokens."""


class UnknownSubject(Exception):
    """A valid token's subject no longer exists (user or client removed)."""


class UnknownUsers(NotFound):
    """users has no user with these ids (`user_ids`), named at their places in the request."""

    def __init__(self, user_ids: list[str], requested: list[str]) -> None:
        position = {user_id: index for index, user_id in enumerate(requested)}
        named = ", ".join(repr(user_id) for user_id in user_ids[:MAX_NAMED_UNKNOWN_USERS])
        more = len(user_ids) - MAX_NAMED_UNKNOWN_USERS
        named += f" and {more} more" if more > 0 else ""
        super().__init__(
            f"users has no user with the id {named}; nothing was set",
            fields=[
                {
                    "field": f"credentials[{position[user_id]}].userId",
                    "message": f"{user_id!r} is not a user",
                }
                for user_id in user_ids
            ],
        )
        self.user_ids = user_ids


class Users(Protocol):
    async def get_user(self, user_id: str) -> UserInfo: ...


class CredentialRepository(Protocol):
    async def get_client(self, client_id: str) -> Client | None: ...

    async def password_hash(self, username: str) -> str | None: ...

    async def upsert_password_hashes(self, hashes: Sequence[tuple[str, str]]) -> None:
        """(username, password hash) pairs, stored all or none."""
        ...


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    scope: str | None = None


@dataclass(frozen=True)
class Exchanged:
    token: str
    claims: dict[str, Any]
    is_user: bool


class AuthService:
    def __init__(
        self,
        credentials: CredentialRepository,
        keys: KeyStore,
        users: Users,
        *,
        issuer: str,
        cache: ExchangeCache | None = None,
        logins: LoginLimiter | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._credentials = credentials
        # The brute-force limit; None only where a test leaves it out.
        self._logins = logins
        self.keys = keys
        self._users = users
        self.issuer = issuer
        self.cache = cache or ExchangeCache(clock=clock)
        self.known_users = KnownUsers(clock=clock)
        self._clock = clock
        self._exchanging: SingleFlight[bytes, CachedExchange] = SingleFlight()
        self._blocks_current_at: Callable[[], float | None] = lambda: None
        self.recent_blocks = RecentBlocks(clock)

    def follow_blocks(self, current_at: Callable[[], float | None]) -> None:
        """Take `current_at()` as the time up to which every UserBlocked event is handled
        (`on_user_event`): while it is recent, a cached user needs no re-check with users."""
        self._blocks_current_at = current_at

    def blocks_current_at(self) -> float | None:
        """When (epoch seconds) every UserBlocked event published so far had been handled; None
        while that is not known."""
        return self._blocks_current_at()

    # --- clients and grants ---------------------------------------------------------------

    async def authenticate_client(self, credentials: ClientCredentials) -> Client:
        client = await self._credentials.get_client(credentials.client_id)
        ok = await asyncio.to_thread(
            passwords.verify, client.secret_hash if client else None, credentials.secret
        )
        if client is None or not ok:
            log.info("client authentication failed", extra={"client_id": credentials.client_id})
            raise InvalidClient(credentials.client_id)
        return client

    async def password_grant(
        self,
        username: str,
        password: str,
        scope: tuple[str, ...],
        client: ClientCredentials | None,
        *,
        client_address: str = UNKNOWN_ADDRESS,
    ) -> IssuedToken:
        """An external token for a user whose password matches and who is not blocked.

        TooManyFailedLogins, before the password is looked at, while the username or the
        client address is over its limit of failed logins (services/auth/login_limits.py).
        """
        client_id = (
            (await self.authenticate_client(client)).client_id if client else PUBLIC_CLIENT_ID
        )
        user = await self.authenticate_user(username, password, client_address=client_address)
        return self._external(user.id, client_id, scope, GTY_PASSWORD)

    async def authenticate_user(
        self, username: str, password: str, *, client_address: str = UNKNOWN_ADDRESS
    ) -> UserInfo:
        """The user whose password this is, under the brute-force limit (password grant and
        the sign-in page alike): TooManyFailedLogins before the password is looked at while the
        username or the client address is over its limit (services/auth/login_limits.py),
        InvalidCredentials, UserBlocked."""
        if self._logins is None:
            user = await self._check_password(username, password)
        else:
            try:
                attempt = await self._logins.attempt(username, client_address)
            except TooManyFailedLogins as exc:
                log.warning(
                    "login refused: too many failed logins",
                    extra={"username": username, "client_address": client_address,
                           "over": exc.scope.value},
                )  # fmt: skip
                raise
            try:
                user = await self._check_password(username, password)
            except InvalidCredentials:
                attempt.failed()
                raise
            finally:
                await attempt.close()
        if user.blocked:
            log.info("login refused: user blocked", extra={"user_id": user.id})
            raise UserBlocked(user.id)
        return user

    async def current_user(self, user_id: str) -> UserInfo:
        """users' answer about `user_id` now: UnknownUser, or Unavailable while it cannot say."""
        return await self._user(user_id)

    async def _check_password(self, username: str, password: str) -> UserInfo:
        """The user, if the password is theirs; InvalidCredentials for a wrong password, a
        username without one, or one users does not know."""
        stored = await self._credentials.password_hash(username)
        if not await asyncio.to_thread(passwords.verify, stored, password):
            log.info("password grant refused: bad credentials", extra={"username": username})
            raise InvalidCredentials(username)
        try:
            return await self._user(username)
        except UnknownUser:
            log.warning(
                "password grant refused: no such user in users", extra={"username": username}
            )
            raise InvalidCredentials(username) from None

    async def client_credentials_grant(
        self, client: ClientCredentials, scope: tuple[str, ...]
    ) -> IssuedToken:
        authenticated = await self.authenticate_client(client)
        return self._external(
            authenticated.client_id, authenticated.client_id, scope, GTY_CLIENT_CREDENTIALS
        )

    def _external(self, sub: str, client_id: str, scope: tuple[str, ...], gty: str) -> IssuedToken:
        claims = external_claims(
            issuer=self.issuer,
            sub=sub,
            client_id=client_id,
            scope=scope,
            gty=gty,
            now=int(self._clock()),
        )
        log.info("access token issued", extra={"sub": sub, "client_id": client_id, "gty": gty})
        return IssuedToken(self.keys.sign(claims), EXTERNAL_TTL_S, claims["scope"])

    # --- passwords set by an admin --------------------------------------------------------

    async def set_passwords(self, credentials: Sequence[Credential]) -> None:
        """Store each user's password, all or none: UnknownUsers names the ids users does not
        know (and nothing is stored); Unavailable when users cannot say."""
        user_ids = [credential.user_id for credential in credentials]
        try:
            unknown = await self._unknown_users(user_ids)
        except Unavailable as exc:
            raise Unavailable(f"{exc} (nothing was set)") from exc
        if unknown:
            raise UnknownUsers(unknown, user_ids)
        hashes = await in_batches(
            [credential.password for credential in credentials],
            HASHES_AT_ONCE,
            lambda password: asyncio.to_thread(passwords.hash_secret, password),
        )
        await self._credentials.upsert_password_hashes(list(zip(user_ids, hashes, strict=True)))
        log.info("passwords set", extra={"users": len(user_ids)})

    async def _unknown_users(self, user_ids: list[str]) -> list[str]:
        async def is_unknown(user_id: str) -> bool:
            try:
                await self._user(user_id)
            except UnknownUser:
                return True
            return False

        unknown = await in_batches(user_ids, USER_LOOKUPS_AT_ONCE, is_unknown)
        return [user_id for user_id, missing in zip(user_ids, unknown, strict=True) if missing]

    # --- verification and exchange -------------------------------------------------------

    async def verify_external(self, token: str) -> dict[str, Any]:
        """The claims of a valid external access token (the edge's checks); Unauthenticated."""
        return await verify_jwt(
            token, self.keys, issuer=self.issuer, audience=EXTERNAL_AUDIENCE, now=self._clock()
        )

    async def exchange(self, external_token: str) -> Exchanged:
        """RFC 8693: an internal token for a valid external one, with the subject's current roles.

        Unauthenticated, UnknownSubject, UserBlocked, or Unavailable while users cannot say.
        """
        claims = await self.verify_external(external_token)
        sub = claims["sub"]
        if claims.get("gty") == GTY_CLIENT_CREDENTIALS:
            client = await self._credentials.get_client(sub)
            if client is None:
                raise UnknownSubject(sub)
            roles, is_user = client.roles, False
        else:
            user = await self._known_user(sub)
            if user.blocked:
                raise UserBlocked(sub)
            roles, is_user = user.roles, True
        now = int(self._clock())
        internal = internal_claims(sub=sub, roles=roles, now=now, not_after=int(claims["exp"]))
        if internal["exp"] <= now:
            raise Unauthenticated("token expired")
        return Exchanged(self.keys.sign(internal), internal, is_user)

    async def authorize(self, external_token: str) -> CachedExchange:
        """The edge's check: the internal token for this external token, and until when.

        Served from the cache while it is fresh. A UserBlocked event drops the user's entries;
        a cached user's blocked status is asked of users only when neither that nor the block
        events were known current in the last 30 s (the events' consumer stalled or behind).
        Requests for a token not in the cache yet share one exchange. Raises what `exchange`
        raises.
        """
        entry = self.cache.get(external_token)
        if entry is None:
            return await self._exchanging.run(
                token_key(external_token), lambda: self._exchange_into_cache(external_token)
            )
        if self.cache.needs_recheck(entry, self._blocks_current_at()):
            await self._recheck(entry)
        return entry

    async def _known_user(self, user_id: str) -> UserInfo:
        """users' last answer about `user_id` while the block events vouch for it, else a new
        one. A block learnt while users answered (`recent_blocks`) stands over the answer."""
        user = self.known_users.get(user_id, self._blocks_current_at())
        if user is not None:
            return user
        try:
            user = await self._user(user_id)
        except UnknownUser:
            raise UnknownSubject(user_id) from None
        if user_id in self.recent_blocks:
            return replace(user, blocked=True)
        self.known_users.put(user)
        return user

    async def _user(self, user_id: str) -> UserInfo:
        """users' answer about `user_id`: UnknownUser, or Unavailable while it cannot say."""
        try:
            return await self._users.get_user(user_id)
        except UsersUnavailable as exc:
            raise Unavailable(USERS_UNAVAILABLE) from exc

    async def _exchange_into_cache(self, external_token: str) -> CachedExchange:
        exchanged = await self.exchange(external_token)
        entry = CachedExchange(
            internal_token=exchanged.token,
            sub=exchanged.claims["sub"],
            is_user=exchanged.is_user,
            expires_at=exchanged.claims["exp"],
            checked_at=self._clock(),
        )
        self.cache.put(external_token, entry)
        return entry

    def reusable_for_s(self, entry: CachedExchange) -> int:
        """How long the edge may reuse an exchanged token: until a little before it expires
        (clock skew, the request's own time in flight)."""
        return max(int(entry.expires_at - self._clock()) - REUSE_MARGIN_S, 0)

    async def _recheck(self, entry: CachedExchange) -> None:
        self.cache.checked(entry)
        try:
            user = await self._users.get_user(entry.sub)
        except UnknownUser:
            self.cache.invalidate_user(entry.sub)
            raise UnknownSubject(entry.sub) from None
        except UsersUnavailable as exc:
            log.warning(
                "cannot re-check a cached user; serving the cached exchange",
                extra={"user_id": entry.sub, "code": exc.code.name},
            )
            return
        if user.blocked:
            self.invalidate_user(user.id)
            raise UserBlocked(user.id)

    async def on_user_event(self, _conn: Connection, event: Event) -> None:
        """user-events: a UserBlocked event drops the user's cached exchanges."""
        if event.type == EventType.USER_BLOCKED:
            self.invalidate_user(event.data["userId"])

    def invalidate_user(self, user_id: str) -> None:
        """Forget every cached exchange of `user_id` (called when the user is blocked), and tell
        the edges (`recent_blocks`)."""
        self.recent_blocks.add(user_id)
        self.known_users.forget(user_id)
        dropped = self.cache.invalidate_user(user_id)
        log.info("cached exchanges dropped", extra={"user_id": user_id, "dropped": dropped})

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the claims of an active external or internal token, or inactive."""
        for issuer, audience in (
            (self.issuer, EXTERNAL_AUDIENCE),
            (INTERNAL_ISSUER, INTERNAL_AUDIENCE),
        ):
            try:
                claims = await verify_jwt(
                    token,
                    self.keys,
                    issuer=issuer,
                    audience=audience,
                    leeway_s=0,
                    now=self._clock(),
                )
            except Unauthenticated:
                continue
            return {"active": True, "token_type": "Bearer"} | {
                name: claims[name] for name in INTROSPECTED_CLAIMS if name in claims
            }
        return {"active": False}

    # --- keys ------------------------------------------------------------------

    async def rotate_keys(self) -> Rotation:
        return await self.keys.rotate()


async def in_batches(items: Sequence[T], size: int, call: Callable[[T], Awaitable[R]]) -> list[R]:
    """`call` on every item, `size` at a time, results in item order. A batch at a time, so a
    failure leaves at most one batch's calls running (asyncio.gather does not cancel them)."""
    results: list[R] = []
    for start in range(0, len(items), size):
        results += await asyncio.gather(*(call(item) for item in items[start : start + size]))
    return results
