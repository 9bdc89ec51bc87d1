"""Zero-trust authentication inside the mesh: every service verifies the internal JWT itself.

The edge exchanges the client's external token for a short internal JWT (issuer
`shopmesh-auth`, audience `shopmesh-internal`, the user's `roles`) and sends it upstream in
`Authorization: Bearer`. A service checks it with the keys auth publishes at `/auth/jwks`,
fetched through the service's own sidecar (`Jwks.for_settings`).

- `verify_internal(token, keys)` -> `Principal(sub, roles)`, or `Unauthenticated(reason)`.
- `auth_middleware(keys)` for aiohttp; the Principal is `request_principal(request)`.
- `AuthInterceptor(keys)` for grpc.aio; the Principal is `current_principal()`.
- `require_role` / `require_self_or_admin` raise services.common.errors.PermissionDenied (a 403
  problem, gRPC PERMISSION_DENIED, like every domain error).
- `bearer_headers` / `bearer_metadata` forward the caller's token on outgoing calls.

`verify_jwt` is the one implementation of the checks, also used by auth for external tokens:
an explicit algorithm allow-list (RS256, ES256) checked against the header before any key is
tried, the key chosen by `kid` and bound to its own algorithm, then issuer, audience, exp, nbf
and iat with a small leeway. Header fields that point at other keys (jku, x5u, jwk) are never
followed; a `crit` header is refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import grpc
from aiohttp import web
from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError

from services.common.config import ServiceSettings
from services.common.errors import PermissionDenied
from services.common.problem import UNAUTHENTICATED, Problem
from services.common.rpc import wrap_handler
from services.common.telemetry import client_trace_config

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256"})
INTERNAL_ISSUER = "shopmesh-auth"
INTERNAL_AUDIENCE = "shopmesh-internal"
LEEWAY_S = 30
MAX_TOKEN_LENGTH = 8192
JWKS_PATH = "/auth/jwks"

DEFAULT_EXEMPT_PATHS = frozenset({"/openapi.yaml"})
EXEMPT_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)


class Unauthenticated(Exception):
    """No usable token: missing, malformed, badly signed, expired or not meant for us.

    `reason` is safe to show to the caller; it never contains the token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and roles, and the token itself for forwarding."""

    sub: str
    roles: frozenset[str]
    token: str = field(default="", repr=False, compare=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class VerificationKey:
    """A public key usable for exactly one algorithm."""

    kid: str
    alg: str
    key: Key = field(repr=False, compare=False)

    @classmethod
    def from_jwk(cls, data: Mapping[str, Any]) -> VerificationKey:
        """The key of one JWK; ValueError if it has no kid or an algorithm not allowed."""
        kid = data.get("kid")
        alg = data.get("alg")
        if not isinstance(kid, str) or not kid:
            raise ValueError("JWK without a kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise ValueError(f"JWK {kid!r} has algorithm {alg!r}, not one of the allowed")
        if data.get("use", "sig") != "sig":
            raise ValueError(f"JWK {kid!r} is not a signing key")
        expected_kty = "RSA" if alg == "RS256" else "EC"
        if data.get("kty") != expected_kty or "d" in data:
            raise ValueError(f"JWK {kid!r} is not a public {expected_kty} key")
        try:
            key = jwk.construct(dict(data), alg)
        except JOSEError as exc:
            raise ValueError(f"JWK {kid!r} is not a valid key: {exc}") from None
        return cls(kid=kid, alg=alg, key=key)


class KeySource(Protocol):
    """Where verification keys come from (auth's JWKS, or auth's own key ring)."""

    async def key(self, kid: str) -> VerificationKey | None: ...


async def verify_jwt(
    token: str,
    keys: KeySource,
    *,
    issuer: str,
    audience: str,
    leeway_s: int = LEEWAY_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of `token` once every check passes; Unauthenticated otherwise."""
    if not token:
        raise Unauthenticated("missing token")
    # A compact JWS is ASCII; jose cannot even encode a str that holds a lone surrogate.
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2 or not token.isascii():
        raise Unauthenticated("malformed token")
    try:
        header = jws.get_unverified_header(token)
    except JOSEError:
        raise Unauthenticated("malformed token") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise Unauthenticated("token algorithm not allowed")
    if "crit" in header:
        raise Unauthenticated("token has critical header extensions")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("token has no key id")
    key = await keys.key(kid)
    if key is None:
        raise Unauthenticated("token signed by an unknown key")
    if key.alg != alg:
        raise Unauthenticated("token algorithm does not match its key")
    try:
        payload = jws.verify(token, key.key, algorithms=[key.alg])
    except JOSEError:
        raise Unauthenticated("token signature is invalid") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise Unauthenticated("malformed token") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("malformed token")
    check_claims(
        claims,
        issuer=issuer,
        audience=audience,
        leeway_s=leeway_s,
        now=time.time() if now is None else now,
    )
    return claims


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, leeway_s: int, now: float
) -> None:
    """The registered claims every shopmesh token must carry, with the right types and values."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(f"token has no valid {name}")
    if claims["exp"] <= now - leeway_s:
        raise Unauthenticated("token expired")
    if claims["nbf"] > now + leeway_s:
        raise Unauthenticated("token not yet valid")
    if claims["iat"] > now + leeway_s:
        raise Unauthenticated("token issued in the future")
    if claims.get("iss") != issuer:
        raise Unauthenticated("token issuer not accepted")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audience not in audiences:
        raise Unauthenticated("token audience not accepted")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("token has no subject")


async def verify_internal(
    token: str, keys: KeySource, *, leeway_s: int = LEEWAY_S, now: float | None = None
) -> Principal:
    """The Principal of a valid internal token; Unauthenticated(reason) otherwise."""
    claims = await verify_internal_claims(token, keys, leeway_s=leeway_s, now=now)
    return principal_of(claims, token)


async def verify_internal_claims(
    token: str, keys: KeySource, *, leeway_s: int = LEEWAY_S, now: float | None = None
) -> dict[str, Any]:
    """The claims of a valid internal token (roles checked too); Unauthenticated otherwise."""
    claims = await verify_jwt(
        token,
        keys,
        issuer=INTERNAL_ISSUER,
        audience=INTERNAL_AUDIENCE,
        leeway_s=leeway_s,
        now=now,
    )
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("token roles are malformed")
    return claims


def principal_of(claims: Mapping[str, Any], token: str) -> Principal:
    """The caller named by verified internal claims."""
    return Principal(sub=claims["sub"], roles=frozenset(claims.get("roles", [])), token=token)


MAX_VERIFIED_TOKENS = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    not_before: float
    expires: float


class VerifiedTokens:
    """Internal tokens verified once per process, not once per request.

    A caller sends the same internal JWT with every request until it expires (the edge's token
    exchange hands out one per external token), and an RS256 verification in Python costs more
    than the rest of a cached GET. So the Principal of a token that passed every check is kept
    until the token expires: a token seen before only has its time window checked again.

    What this gives up: a token stays accepted until its `exp` even if its signing key left the
    JWKS meanwhile (internal tokens live minutes: services/auth/tokens.py). Only tokens that
    verified are kept; a refused token is verified, and refused, again every time.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        max_tokens: int = MAX_VERIFIED_TOKENS,
        leeway_s: int = LEEWAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._max_tokens = max_tokens
        self._leeway_s = leeway_s
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def principal(self, token: str) -> Principal:
        """The Principal of a valid internal token; Unauthenticated(reason) otherwise."""
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if known.expires <= now - self._leeway_s:
                del self._verified[token]
                raise Unauthenticated("token expired")
            if known.not_before <= now + self._leeway_s:
                self._verified.move_to_end(token)
                return known.principal
        claims = await verify_internal_claims(token, self._keys, leeway_s=self._leeway_s, now=now)
        principal = principal_of(claims, token)
        self._verified[token] = _Verified(principal, claims["nbf"], claims["exp"])
        if len(self._verified) > self._max_tokens:
            self._verified.popitem(last=False)
        return principal

    def __len__(self) -> int:
        return len(self._verified)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # RFC 6750's b64token is ASCII; header bytes that are not UTF-8 arrive as lone surrogates.
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        raise Unauthenticated("authorization is not a bearer token")
    return token


JwksFetch = Callable[[], Awaitable[Mapping[str, Any]]]


class Jwks:
    """Auth's public keys, fetched from its JWKS and cached.

    A kid not in the cache triggers one refetch, at most once per `min_refetch_interval_s` (a
    flood of made-up kids costs auth one request per interval, not one per token). A cached
    set older than `max_age_s` is refreshed in the background while the cached keys keep
    answering. A failed fetch keeps the keys already known, so a short auth outage does not
    stop verification.
    """

    def __init__(
        self,
        url: str,
        *,
        fetch: JwksFetch | None = None,
        min_refetch_interval_s: float = 5.0,
        max_age_s: float = 300.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch or self._fetch_http
        self._min_interval = min_refetch_interval_s
        self._max_age = max_age_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._background: asyncio.Task[bool] | None = None

    @classmethod
    def for_settings(cls, settings: ServiceSettings, **kwargs: Any) -> Jwks:
        """The JWKS of auth, reached through this instance's sidecar upstream `auth`."""
        return cls(f"http://127.0.0.1:{settings.upstream_port('auth')}{JWKS_PATH}", **kwargs)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def key(self, kid: str) -> VerificationKey | None:
        found = self._keys.get(kid)
        if found is not None:
            self._refresh_if_stale()
            return found
        async with self._lock:
            found = self._keys.get(kid)
            if found is None and self._may_fetch():
                await self._refresh_locked()
                found = self._keys.get(kid)
        return found

    async def refresh(self) -> bool:
        """Fetch the key set now (ignoring the rate limit); False if it could not be fetched."""
        async with self._lock:
            return await self._refresh_locked()

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
            self._background = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None or self._clock() - self._attempted_at >= self._min_interval
        )

    def _refresh_if_stale(self) -> None:
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age
        running = self._background is not None and not self._background.done()
        if stale and not running and not self._lock.locked() and self._may_fetch():
            self._background = asyncio.create_task(self.refresh(), name="jwks refresh")

    async def _refresh_locked(self) -> bool:
        self._attempted_at = self._clock()
        try:
            document = await self._fetch()
            keys = parse_jwks(document)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning(
                "cannot fetch the JWKS; keeping the keys already known",
                extra={
                    "url": self.url,
                    "error": f"{type(exc).__name__}: {exc}",
                    "known_keys": len(self._keys),
                },
            )
            return False
        if set(keys) != set(self._keys):
            log.info("JWKS keys changed", extra={"url": self.url, "kids": sorted(keys)})
        self._keys = keys
        self._fetched_at = self._clock()
        return True

    async def _fetch_http(self) -> Mapping[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trace_configs=[client_trace_config()]
            )
        async with self._session.get(self.url) as resp:
            if resp.status != 200:
                raise ValueError(f"JWKS answered HTTP {resp.status}")
            document = await resp.json(content_type=None)
        if not isinstance(document, Mapping):
            raise ValueError("JWKS is not a JSON object")
        return document


def parse_jwks(document: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """The usable keys of a JWK set by kid; unusable entries are skipped (and logged)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no keys list")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        try:
            key = VerificationKey.from_jwk(entry)
        except ValueError as exc:
            log.warning("JWKS entry skipped", extra={"error": str(exc)})
            continue
        keys[key.kid] = key
    return keys


# --- authorization -------------------------------------------------------------------------

ADMIN_ROLE = "admin"


def require_role(principal: Principal, *roles: str) -> None:
    """PermissionDenied unless the principal has at least one of `roles`."""
    if not any(principal.has_role(role) for role in roles):
        raise PermissionDenied(f"requires the role {' or '.join(roles)}")


def require_self_or_admin(principal: Principal, user_id: str, *also: str) -> None:
    """PermissionDenied unless the principal is the user `user_id`, an admin, or has one of the
    roles in `also` (e.g. "service" for calls made by another service on its own behalf)."""
    if principal.sub == user_id or principal.has_role(ADMIN_ROLE):
        return
    if not any(principal.has_role(role) for role in also):
        raise PermissionDenied("only the user themselves or an admin may do this")


# --- aiohttp -------------------------------------------------------------------------------

_CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "shopmesh_principal", default=None
)

PRINCIPAL = web.RequestKey("principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_principal(request: web.Request) -> Principal:
    """The verified caller of a request that went through `auth_middleware`."""
    try:
        return request[PRINCIPAL]
    except KeyError:
        raise Unauthenticated("request was not authenticated") from None


def unauthenticated_problem(reason: str) -> Problem:
    return Problem(
        401,
        "Unauthenticated",
        reason,
        type=UNAUTHENTICATED,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


async def authenticate_request(request: web.Request, tokens: VerifiedTokens) -> Principal:
    """Verify the request's internal bearer token and remember the Principal on it."""
    principal = await tokens.principal(bearer_token(request.headers.get("Authorization")))
    request[PRINCIPAL] = principal
    return principal


def auth_middleware(
    keys: KeySource, *, exempt: Iterable[str] = DEFAULT_EXEMPT_PATHS
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Require an internal token on every path except `exempt` (exact paths).

    401 problem+json with `WWW-Authenticate: Bearer` when the token is missing or invalid.
    """
    exempt_paths = frozenset(exempt)
    tokens = VerifiedTokens(keys)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt_paths:
            return await handler(request)
        try:
            principal = await authenticate_request(request, tokens)
        except Unauthenticated as exc:
            log.info(
                "request refused: unauthenticated",
                extra={"method": request.method, "path": request.path, "reason": exc.reason},
            )
            return unauthenticated_problem(exc.reason).to_response(request.path)
        # Also the current principal of this task, so outgoing calls can forward the token.
        reset = _CURRENT_PRINCIPAL.set(principal)
        try:
            return await handler(request)
        finally:
            _CURRENT_PRINCIPAL.reset(reset)

    return authenticate


def install_internal_auth(
    app: web.Application,
    settings: ServiceSettings,
    *,
    exempt: Iterable[str] = DEFAULT_EXEMPT_PATHS,
) -> Jwks:
    """Add `auth_middleware` with auth's JWKS (via the sidecar) to `app`; closed on cleanup.

    Call before the application starts, after the problem middleware is in place.
    """
    jwks = Jwks.for_settings(settings)
    app.middlewares.append(auth_middleware(jwks, exempt=exempt))

    async def closing(_app: web.Application) -> AsyncIterator[None]:
        yield
        await jwks.close()

    app.cleanup_ctx.append(closing)
    return jwks


def bearer_headers(principal: Principal) -> dict[str, str]:
    """HTTP headers that pass the caller's internal token on to another service."""
    return {"Authorization": f"Bearer {principal.token}"}


# --- grpc.aio ------------------------------------------------------------------------------


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def current_principal() -> Principal:
    """The verified caller of the RPC or request being handled (set by AuthInterceptor and by
    the aiohttp auth middleware)."""
    principal = _CURRENT_PRINCIPAL.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller in this context")
    return principal


def bearer_metadata(principal: Principal | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that passes a token on (default: the current RPC's caller)."""
    token = (principal or current_principal()).token
    return (("authorization", f"Bearer {token}"),)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Require an internal token in the `authorization` metadata of every RPC except the
    grpc.health.v1 checks; UNAUTHENTICATED otherwise. Handlers read `current_principal()`."""

    def __init__(
        self, keys: KeySource, *, exempt_prefixes: tuple[str, ...] = EXEMPT_GRPC_PREFIXES
    ) -> None:
        self._tokens = VerifiedTokens(keys)
        self._exempt = exempt_prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(self._exempt):
            return handler
        authorization = _metadata_value(handler_call_details.invocation_metadata, "authorization")

        async def authenticate(context: grpc.aio.ServicerContext) -> contextvars.Token:
            try:
                principal = await self._tokens.principal(bearer_token(authorization))
            except Unauthenticated as exc:
                log.info(
                    "rpc refused: unauthenticated", extra={"method": method, "reason": exc.reason}
                )
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
            return _CURRENT_PRINCIPAL.set(principal)

        def unary(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
                reset = await authenticate(context)
                try:
                    return await behavior(request, context)
                finally:
                    _CURRENT_PRINCIPAL.reset(reset)

            return handle

        def streaming(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                reset = await authenticate(context)
                try:
                    result = behavior(request, context)
                    if hasattr(result, "__aiter__"):
                        async for response in result:
                            yield response
                    else:
                        await result
                finally:
                    _CURRENT_PRINCIPAL.reset(reset)

            return handle

        return wrap_handler(handler, unary_response=unary, streaming_response=streaming)


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return None
