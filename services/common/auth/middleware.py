"""The aiohttp side: every request carries an internal token the service verifies itself."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common.auth.jwks import Jwks
from services.common.auth.jwt import KeySource, bearer_token
from services.common.auth.principal import Principal, Unauthenticated, calling_as
from services.common.auth.verified_tokens import VerifiedTokens
from services.common.config import ServiceSettings
from services.common.problem import UNAUTHENTICATED, Problem

log = logging.getLogger(__name__)

DEFAULT_EXEMPT_PATHS = frozenset({"/openapi.yaml"})

PRINCIPAL = web.RequestKey("principal", Principal)


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


def auth_middleware(keys: KeySource, *, exempt: Iterable[str] = DEFAULT_EXEMPT_PATHS) -> Middleware:
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
        with calling_as(principal):
            return await handler(request)

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
