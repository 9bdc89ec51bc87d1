"""Signing in a browser: the authorization code flow with PKCE (OAuth 2.1, OIDC Core) for the
registered public clients (services/auth/authorization.py), over a SignInRepository.

- An **auth session** (the browser's cookie at /auth, 8 h) lets a signed-in browser get a code
  without the login page.
- A **pending request** is an authorization request waiting for the login page's form: the page
  carries only its random id, bound to the browser by a second cookie (login CSRF).
- A **code** (60 s, single use) opens a **refresh-token family**; each refresh token is used
  once and replaced (rotation). A code or refresh token presented again revokes the family:
  one of the two presenters is not the client it was issued to (RFC 6819 §5.2.2.3, OAuth 2.1
  §4.3.1).

Every secret handed out (session id, request id, browser binding, code, refresh token) is 32
random bytes, stored only as its SHA-256: a read of the tables gives nothing to present.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, NoReturn, Protocol, TypeVar

from contracts import EventType
from services.auth.authorization import (
    PROMPT_LOGIN,
    PROMPT_NONE,
    AuthorizationError,
    AuthorizationRequest,
    PublicClient,
    pkce_matches,
    redirect_location,
)
from services.auth.clients import UnknownUser, UserInfo
from services.auth.service import UNKNOWN_ADDRESS, AuthService, UserBlocked
from services.auth.tokens import GTY_AUTHORIZATION_CODE, external_claims, id_token_claims
from services.common.db import Connection
from services.common.messaging.envelope import Event

log = logging.getLogger(__name__)

SESSION_TTL_S = 8 * 60 * 60
PENDING_REQUEST_TTL_S = 10 * 60
CODE_TTL_S = 60
# A family of refresh tokens ends with the session it came from, at the latest.
REFRESH_FAMILY_TTL_S = SESSION_TTL_S
ID_TOKEN_TTL_S = 5 * 60

T = TypeVar("T")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a secret: its SHA-256 (the secrets are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    id_hash: str
    user_id: str
    auth_time: int
    expires_at: float


@dataclass(frozen=True)
class PendingRequest:
    id_hash: str
    browser_hash: str
    request: AuthorizationRequest
    expires_at: float


@dataclass(frozen=True)
class Family:
    """What one sign-in granted a client: its codes and refresh tokens, revoked together."""

    family_id: str
    client_id: str
    user_id: str
    scope: tuple[str, ...]
    auth_time: int
    session_hash: str
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class Code:
    code_hash: str
    family_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    expires_at: float


@dataclass(frozen=True)
class RefreshToken:
    token_hash: str
    family_id: str
    expires_at: float


@dataclass(frozen=True)
class Used(Generic[T]):
    """A single-use record, and whether it had already been used before this call."""

    record: T
    already_used: bool


class SignInRepository(Protocol):
    """Each call is atomic on its own; `use_code` and `use_refresh_token` mark the record used
    and say whether it already was, in one step, so two presenters cannot both be first."""

    async def add_session(self, session: Session) -> None: ...
    async def session(self, id_hash: str) -> Session | None: ...
    async def delete_session(self, id_hash: str) -> None: ...
    async def add_pending(self, pending: PendingRequest) -> None: ...
    async def pending(self, id_hash: str) -> PendingRequest | None: ...
    async def delete_pending(self, id_hash: str) -> None: ...
    async def add_family(self, family: Family) -> None: ...
    async def family(self, family_id: str) -> Family | None: ...
    async def revoke_family(self, family_id: str) -> None: ...
    async def revoke_session_families(self, session_hash: str) -> int: ...
    async def add_code(self, code: Code) -> None: ...
    async def code(self, code_hash: str) -> Code | None: ...
    async def use_code(self, code_hash: str) -> Used[Code] | None: ...
    async def add_refresh_token(self, token: RefreshToken) -> None: ...
    async def use_refresh_token(self, token_hash: str) -> Used[RefreshToken] | None: ...
    async def refresh_token(self, token_hash: str) -> RefreshToken | None: ...
    async def revoke_user(self, user_id: str) -> int:
        """End the user's sessions and revoke their families; how many of each there were."""
        ...

    async def prune(self, now: float) -> int: ...


class InvalidGrant(Exception):
    """The code or refresh token cannot be used (OAuth's invalid_grant): unknown, expired,
    already used, revoked, not this client's, wrong redirect_uri or verifier, blocked user."""


class UnknownClient(Exception):
    """No registered public client has this id (OAuth's invalid_client)."""


class ExpiredRequest(Exception):
    """The login form's request is unknown, over, or not this browser's: start again."""


@dataclass(frozen=True)
class LoginPage:
    """No session: show the login page for this pending request (`request_id` in the form,
    `browser` in the binding cookie)."""

    request_id: str
    browser: str
    request: AuthorizationRequest


@dataclass(frozen=True)
class SignedIn:
    """Send the browser to `location` (the client's redirect_uri with code and state); a
    fresh login also sets the session cookie to `session_id`."""

    location: str
    session_id: str | None = None


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_in: int
    refresh_token: str
    id_token: str
    scope: str


class SignIn:
    def __init__(
        self,
        auth: AuthService,
        repository: SignInRepository,
        clients: Mapping[str, PublicClient],
        *,
        clock: Callable[[], float],
    ) -> None:
        self._auth = auth
        self._repository = repository
        self.clients = clients
        self._clock = clock

    # --- the authorization endpoint and the login page ---------------------------------

    async def authorize(
        self, request: AuthorizationRequest, session_id: str | None, browser: str | None
    ) -> SignedIn | LoginPage:
        """A code at once for a browser with a live session (unless prompt=login); the login
        page otherwise, or AuthorizationError login_required when the client said
        prompt=none."""
        session = None if request.prompt == PROMPT_LOGIN else await self._session(session_id)
        if session is not None:
            return SignedIn(await self._issue_code(request, session))
        if request.prompt == PROMPT_NONE:
            raise AuthorizationError(
                "login_required", "the user is not signed in", request.redirect_uri, request.state
            )
        request_id, browser = new_secret(), browser or new_secret()
        await self._repository.add_pending(
            PendingRequest(
                digest(request_id),
                digest(browser),
                request,
                self._clock() + PENDING_REQUEST_TTL_S,
            )
        )
        return LoginPage(request_id, browser, request)

    async def pending(self, request_id: str, browser: str | None) -> AuthorizationRequest:
        """The pending request the login form names, if it is live and this browser's."""
        pending = await self._repository.pending(digest(request_id))
        if (
            pending is None
            or pending.expires_at <= self._clock()
            or browser is None
            or not secrets.compare_digest(pending.browser_hash, digest(browser))
        ):
            raise ExpiredRequest()
        return pending.request

    async def login(
        self,
        request_id: str,
        browser: str | None,
        username: str,
        password: str,
        *,
        client_address: str = UNKNOWN_ADDRESS,
    ) -> SignedIn:
        """The login form: a session and a code for the pending request. ExpiredRequest, or
        what AuthService.authenticate_user raises (InvalidCredentials, TooManyFailedLogins,
        UserBlocked, Unavailable)."""
        request = await self.pending(request_id, browser)
        user = await self._auth.authenticate_user(username, password, client_address=client_address)
        await self._repository.delete_pending(digest(request_id))
        session_id = new_secret()
        now = self._clock()
        session = Session(digest(session_id), user.id, int(now), now + SESSION_TTL_S)
        await self._repository.add_session(session)
        log.info("signed in", extra={"user_id": user.id, "client_id": request.client_id})
        return SignedIn(await self._issue_code(request, session), session_id)

    async def _session(self, session_id: str | None) -> Session | None:
        """The live session of this cookie whose user may still sign in; a blocked or removed
        user's session ends here."""
        if not session_id:
            return None
        session = await self._repository.session(digest(session_id))
        if session is None or session.expires_at <= self._clock():
            return None
        try:
            user = await self._auth.current_user(session.user_id)
        except UnknownUser:
            user = None
        if user is None or user.blocked:
            await self._end_session(session.id_hash)
            return None
        return session

    async def _issue_code(self, request: AuthorizationRequest, session: Session) -> str:
        now = self._clock()
        family = Family(
            family_id=str(uuid.uuid4()),
            client_id=request.client_id,
            user_id=session.user_id,
            scope=request.scope,
            auth_time=session.auth_time,
            session_hash=session.id_hash,
            expires_at=min(now + REFRESH_FAMILY_TTL_S, session.expires_at),
        )
        await self._repository.add_family(family)
        code = new_secret()
        await self._repository.add_code(
            Code(
                digest(code),
                family.family_id,
                request.redirect_uri,
                request.code_challenge,
                request.nonce,
                now + CODE_TTL_S,
            )
        )
        return redirect_location(request.redirect_uri, {"code": code, "state": request.state})

    # --- the token endpoint ------------------------------------------------------------

    async def redeem_code(
        self, client_id: str, code: str, redirect_uri: str, code_verifier: str
    ) -> TokenSet:
        """Tokens for a code, once: InvalidGrant for anything wrong; a code presented again
        revokes what it issued."""
        client = self._client(client_id)
        family, user = await self._grantable(await self._repository.code(digest(code)))
        used = await self._repository.use_code(digest(code))
        if used is None:
            raise InvalidGrant("unknown code")
        if used.already_used:
            await self._reused(family, "authorization code")
        record = used.record
        if (
            family.revoked
            or family.client_id != client.client_id
            or record.expires_at <= self._clock()
            or record.redirect_uri != redirect_uri
            or not pkce_matches(code_verifier, record.code_challenge)
        ):
            raise InvalidGrant("the code is invalid, expired, or not for this request")
        return await self._tokens(client, family, user, nonce=record.nonce)

    async def refresh(self, client_id: str, refresh_token: str) -> TokenSet:
        """A new token set for a refresh token, which is used up (rotation). One presented
        again revokes its family; a blocked user's family is revoked too."""
        client = self._client(client_id)
        token_hash = digest(refresh_token)
        family, user = await self._grantable(await self._repository.refresh_token(token_hash))
        used = await self._repository.use_refresh_token(token_hash)
        if used is None:
            raise InvalidGrant("unknown refresh token")
        if used.already_used:
            await self._reused(family, "refresh token")
        if (
            family.revoked
            or family.client_id != client.client_id
            or used.record.expires_at <= self._clock()
        ):
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        return await self._tokens(client, family, user, nonce=None)

    async def _grantable(self, record: Code | RefreshToken | None) -> tuple[Family, UserInfo]:
        """The family of a code or refresh token and its user, looked at before the record is
        used up: when users cannot answer (Unavailable) nothing is spent, so the client's
        retry is not taken for a replay. A blocked or removed user's family is revoked."""
        family = None if record is None else await self._repository.family(record.family_id)
        if family is None:
            raise InvalidGrant("unknown code or refresh token")
        try:
            user = await self._auth.current_user(family.user_id)
        except UnknownUser:
            user = None
        if user is None or user.blocked:
            await self._repository.revoke_family(family.family_id)
            log.info("no tokens for a blocked user", extra={"user_id": family.user_id})
            raise InvalidGrant("the user is blocked") from UserBlocked(family.user_id)
        return family, user

    async def _reused(self, family: Family, what: str) -> NoReturn:
        await self._repository.revoke_family(family.family_id)
        log.warning(
            f"{what} used twice: its family is revoked",
            extra={"client_id": family.client_id, "user_id": family.user_id},
        )
        raise InvalidGrant(f"the {what} was already used")

    async def _tokens(
        self, client: PublicClient, family: Family, user: UserInfo, *, nonce: str | None
    ) -> TokenSet:
        now = int(self._clock())
        access = external_claims(
            issuer=self._auth.issuer,
            sub=user.id,
            client_id=client.client_id,
            scope=family.scope,
            gty=GTY_AUTHORIZATION_CODE,
            now=now,
            ttl_s=client.access_token_ttl_s,
        )
        id_claims = id_token_claims(
            issuer=self._auth.issuer,
            sub=user.id,
            client_id=client.client_id,
            nonce=nonce or "",
            auth_time=family.auth_time,
            now=now,
            ttl_s=ID_TOKEN_TTL_S,
        )
        if nonce is None:  # OIDC Core §12.2: a refreshed ID token carries no nonce.
            del id_claims["nonce"]
        refresh_token = new_secret()
        await self._repository.add_refresh_token(
            RefreshToken(digest(refresh_token), family.family_id, family.expires_at)
        )
        log.info(
            "tokens issued",
            extra={"sub": user.id, "client_id": client.client_id, "refreshed": nonce is None},
        )
        return TokenSet(
            access_token=self._auth.keys.sign(access),
            expires_in=client.access_token_ttl_s,
            refresh_token=refresh_token,
            id_token=self._auth.keys.sign(id_claims),
            scope=access["scope"],
        )

    def _client(self, client_id: str) -> PublicClient:
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClient(client_id)
        return client

    # --- signing out ---------------------------------------------------------------------

    async def logout(self, session_id: str | None) -> None:
        """End the browser's session and revoke every family it signed in."""
        if session_id:
            await self._end_session(digest(session_id))

    async def revoke(self, client_id: str, token: str) -> None:
        """RFC 7009: revoke a refresh token's family and end the session it came from. Any
        other token (an access token, an unknown or another client's token) is left alone:
        the answer is the same (§2.2)."""
        client = self._client(client_id)
        stored = await self._repository.refresh_token(digest(token))
        if stored is None:
            return
        family = await self._repository.family(stored.family_id)
        if family is None or family.client_id != client.client_id:
            return
        await self._repository.revoke_family(family.family_id)
        await self._end_session(family.session_hash)

    async def _end_session(self, session_hash: str) -> None:
        await self._repository.delete_session(session_hash)
        revoked = await self._repository.revoke_session_families(session_hash)
        log.info("session ended", extra={"families_revoked": revoked})

    async def on_user_event(self, _conn: Connection, event: Event) -> None:
        """user-events: a blocked user's sessions end and their refresh-token families are
        revoked at once (each grant also asks users, so this only makes it sooner)."""
        if event.type == EventType.USER_BLOCKED:
            user_id = event.data["userId"]
            revoked = await self._repository.revoke_user(user_id)
            log.info("blocked user signed out", extra={"user_id": user_id, "revoked": revoked})

    async def prune(self) -> int:
        """Forget expired sessions, pending requests, codes and families."""
        return await self._repository.prune(self._clock())
