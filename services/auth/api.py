"""HTTP entrypoints of auth: parse, call the service layer, map errors.

Errors are problem+json everywhere (the service layer's by services.common.problem's
middleware, as PROBLEMS describes them) except POST /auth/token, which answers in OAuth's own
format (services.auth.oauth), the ext_authz check, which answers for the edge's request, and
the browser sign-in endpoints (services.auth.sign_in_api), which answer a person in HTML.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from services.auth import credentials, oauth
from services.auth.login_limits import TooManyFailedLogins
from services.auth.oauth import OAuthError
from services.auth.service import (
    UNKNOWN_ADDRESS,
    AuthService,
    InvalidClient,
    InvalidCredentials,
    UnknownSubject,
    UnknownUsers,
    UserBlocked,
)
from services.auth.sign_in import InvalidGrant, SignIn, UnknownClient
from services.auth.sign_in_api import SIGN_IN
from services.common import client_address
from services.common.auth.jwt import bearer_token, verify_internal
from services.common.auth.middleware import unauthenticated_problem
from services.common.auth.principal import ADMIN_ROLE, Principal, Unauthenticated, require_role
from services.common.db import DATABASE_UNAVAILABLE
from services.common.errors import Unavailable
from services.common.jsonbody import read_json_object
from services.common.problem import (
    FORBIDDEN,
    INVALID_CLIENT,
    MALFORMED,
    TOO_MANY_FAILED_LOGINS,
    UNAVAILABLE,
    UNKNOWN_USER,
    USER_BLOCKED,
    VALIDATION,
    Problem,
    ProblemKind,
    ProblemKinds,
)

log = logging.getLogger(__name__)

SERVICE = web.AppKey("auth_service", AuthService)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The headers the edge's token cache reads (mesh/runtime/token_exchange.lua).
SUBJECT_HEADER = "X-Subject"
BLOCKS_COMPLETE_FROM = "X-Blocks-Complete-From"
BLOCKS_CURRENT_AT = "X-Blocks-Current-At"
# Users or auth's own database cannot answer now: ext_authz answers 503.
_CANNOT_ANSWER: tuple[type[BaseException], ...] = (Unavailable, *DATABASE_UNAVAILABLE)

# The problems of the service layer's own errors (the common ones: COMMON_KINDS).
PROBLEMS: ProblemKinds = {UnknownUsers: ProblemKind(404, "Unknown users", UNKNOWN_USER)}

routes = web.RouteTableDef()


@routes.get("/.well-known/openid-configuration")
@routes.get("/auth/.well-known/openid-configuration")
async def discovery(request: web.Request) -> web.Response:
    return web.json_response(
        oauth.discovery_document(request.app[SERVICE].issuer),
        headers={"Cache-Control": "public, max-age=300"},
    )


@routes.get("/auth/jwks")
async def jwks(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[SERVICE].keys.jwks(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=60"},
    )


@routes.post("/auth/token")
async def token(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        form = await _form(request)
        grant = oauth.parse_token_request(form, request.headers.get("Authorization"))
        if isinstance(grant, oauth.AuthorizationCodeGrant | oauth.RefreshTokenGrant):
            body = await _sign_in_tokens(request.app[SIGN_IN], grant)
        else:
            body = await _issue(service, grant, _client_address(request))
    except OAuthError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=NO_STORE | exc.headers)
    except TooManyFailedLogins as exc:
        raise Problem(
            429,
            "Too many failed logins",
            "too many failed logins for this username or from this address; "
            f"retry in {exc.retry_after_s} s",
            type=TOO_MANY_FAILED_LOGINS,
            headers=NO_STORE | {"Retry-After": str(exc.retry_after_s)},
        ) from None
    return web.json_response(body, headers=NO_STORE)


def _client_address(request: web.Request) -> str:
    """The client's address as the edge saw it; the peer's (a sidecar's or a local caller's)
    for a request that did not come through the edge."""
    return client_address.from_headers(request.headers) or request.remote or UNKNOWN_ADDRESS


async def _issue(
    service: AuthService,
    grant: oauth.PasswordGrant | oauth.ClientCredentialsGrant | oauth.TokenExchangeGrant,
    address: str,
) -> dict[str, Any]:
    try:
        if isinstance(grant, oauth.PasswordGrant):
            issued = await service.password_grant(
                grant.username, grant.password, grant.scope, grant.client, client_address=address
            )
        elif isinstance(grant, oauth.ClientCredentialsGrant):
            issued = await service.client_credentials_grant(grant.client, grant.scope)
        else:
            return await _exchange(service, grant)
    except InvalidClient:
        raise oauth.invalid_client() from None
    except InvalidCredentials:
        raise oauth.invalid_grant("invalid username or password") from None
    except UserBlocked:
        raise oauth.invalid_grant("the user is blocked") from None
    except Unavailable:
        raise oauth.temporarily_unavailable("the users service does not answer") from None
    except DATABASE_UNAVAILABLE:
        raise oauth.temporarily_unavailable("the database does not answer") from None
    return {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }


async def _sign_in_tokens(
    sign_in: SignIn, grant: oauth.AuthorizationCodeGrant | oauth.RefreshTokenGrant
) -> dict[str, Any]:
    try:
        if isinstance(grant, oauth.AuthorizationCodeGrant):
            tokens = await sign_in.redeem_code(
                grant.client_id, grant.code, grant.redirect_uri, grant.code_verifier
            )
        else:
            tokens = await sign_in.refresh(grant.client_id, grant.refresh_token)
    except UnknownClient:
        raise oauth.invalid_client("unknown client") from None
    except InvalidGrant as exc:
        raise oauth.invalid_grant(str(exc)) from None
    except Unavailable:
        raise oauth.temporarily_unavailable("the users service does not answer") from None
    except DATABASE_UNAVAILABLE:
        raise oauth.temporarily_unavailable("the database does not answer") from None
    return {
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "refresh_token": tokens.refresh_token,
        "id_token": tokens.id_token,
        "scope": tokens.scope,
    }


async def _exchange(service: AuthService, grant: oauth.TokenExchangeGrant) -> dict[str, Any]:
    """RFC 8693 §2.2.2: an unusable subject token is invalid_request."""
    try:
        if grant.client is not None:
            await service.authenticate_client(grant.client)
        exchanged = await service.exchange(grant.subject_token)
    except InvalidClient:
        raise oauth.invalid_client() from None
    except Unauthenticated as exc:
        raise oauth.invalid_request(f"subject_token is not acceptable: {exc.reason}") from None
    except UnknownSubject:
        raise oauth.invalid_request("the subject_token's subject no longer exists") from None
    except UserBlocked:
        raise oauth.invalid_request("the subject_token's user is blocked") from None
    except Unavailable:
        raise oauth.temporarily_unavailable("the users service does not answer") from None
    except DATABASE_UNAVAILABLE:
        raise oauth.temporarily_unavailable("the database does not answer") from None
    claims = exchanged.claims
    return {
        "access_token": exchanged.token,
        "issued_token_type": oauth.TOKEN_TYPE_JWT,
        "token_type": "Bearer",
        "expires_in": claims["exp"] - claims["iat"],
    }


@routes.post("/auth/introspect")
async def introspect(request: web.Request) -> web.Response:
    """RFC 7662; the caller authenticates as a machine client with HTTP Basic."""
    service = request.app[SERVICE]
    authorization = request.headers.get("Authorization")
    try:
        if authorization is None:
            raise oauth.invalid_client("introspection requires HTTP Basic client authentication")
        await service.authenticate_client(oauth.parse_basic(authorization))
    except (OAuthError, InvalidClient) as exc:
        detail = exc.description if isinstance(exc, OAuthError) else "client authentication failed"
        raise Problem(
            401,
            "Unauthenticated",
            detail,
            type=INVALID_CLIENT,
            headers={"WWW-Authenticate": oauth.BASIC_REALM},
        ) from None
    try:
        form = await _form(request)
        values = form.get("token", [])
        if len(values) != 1 or not values[0]:
            raise oauth.invalid_request("exactly one token parameter is required")
    except OAuthError as exc:
        raise Problem(400, "Malformed request", exc.description, type=MALFORMED) from None
    return web.json_response(await service.introspect(values[0]), headers=NO_STORE)


@routes.post("/auth/keys/rotate")
async def rotate_keys(request: web.Request) -> web.Response:
    """The next signing key scheduled to sign, and a new next key published; needs an internal
    token with the admin role."""
    principal = await _admin(request)
    rotation = await request.app[SERVICE].rotate_keys()
    log.info("keys rotated on request", extra={"by": principal.sub, "kid": rotation.kid})
    return web.json_response(
        {
            "kid": rotation.kid,
            "active_from": rotation.active_from.isoformat(),
            "retired_kid": rotation.retired_kid,
            "next_kid": rotation.next_kid,
        }
    )


@routes.post("/auth/credentials")
async def set_credentials(request: web.Request) -> web.Response:
    """Passwords for existing users, all or none; needs an internal token with the admin role."""
    principal = await _admin(request)
    body = await read_json_object(request.clone(client_max_size=credentials.MAX_BODY_BYTES))
    try:
        parsed = credentials.parse_credentials(body)
    except credentials.CredentialErrors as exc:
        raise Problem(
            422, "Invalid credentials", str(exc), type=VALIDATION, errors=exc.errors
        ) from None
    await request.app[SERVICE].set_passwords(parsed)
    log.info("passwords set on request", extra={"by": principal.sub, "users": len(parsed)})
    return web.json_response({"updated": len(parsed)})


async def _admin(request: web.Request) -> Principal:
    """The caller of an admin endpoint: its internal token must carry the admin role."""
    try:
        authorization = request.headers.get("Authorization")
        principal = await verify_internal(bearer_token(authorization), request.app[SERVICE].keys)
    except Unauthenticated as exc:
        raise unauthenticated_problem(exc.reason) from None
    require_role(principal, ADMIN_ROLE)
    return principal


@routes.route("*", "/auth/ext-authz/{tail:.*}")
async def ext_authz(request: web.Request) -> web.Response:
    """The edge's ext_authz check for the request `<method> /<tail>`.

    200 with `Authorization: Bearer <internal token>` (the edge sends it upstream in place of
    the client's) and how long the edge may reuse it (`Cache-Control: private, max-age`: the
    internal token's remaining life), 401 for a bad token, 403 for a blocked user, 503 when
    users cannot say.
    """
    original_path = "/" + request.match_info["tail"]
    service = request.app[SERVICE]
    try:
        exchanged = await service.authorize(_external_token(request))
    except (Unauthenticated, UnknownSubject) as exc:
        reason = exc.reason if isinstance(exc, Unauthenticated) else "unknown subject"
        log.info(
            "ext_authz denied",
            extra={"method": request.method, "original_path": original_path, "reason": reason},
        )
        return unauthenticated_problem(reason).to_response(original_path)
    except UserBlocked as exc:
        log.info("ext_authz denied: user blocked", extra={"user_id": str(exc)})
        problem = Problem(403, "User blocked", "this user is blocked", type=USER_BLOCKED)
        return problem.to_response(original_path)
    except _CANNOT_ANSWER:
        problem = Problem(
            503,
            "Service unavailable",
            "auth cannot check the token's subject now; retry later",
            type=UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
        return problem.to_response(original_path)
    return web.Response(
        status=200,
        headers={
            "Authorization": f"Bearer {exchanged.internal_token}",
            "Cache-Control": f"private, max-age={service.reusable_for_s(exchanged)}",
            # Whose token it is: the edge drops it when GET /auth/blocks names the user.
            SUBJECT_HEADER: exchanged.sub,
        },
    )


@routes.get("/auth/blocks")
async def recent_blocks(request: web.Request) -> web.Response:
    """For the edges' token caches (mesh/runtime/token_exchange.lua): the users this instance
    learnt were blocked lately, one id a line. `X-Blocks-Complete-From`: since when (epoch
    seconds) the list is whole; `X-Blocks-Current-At`, when known: up to when every block
    published had been handled.

    Not for clients: a request the edge routed from the public (it carries the edge's client
    address header) is refused.
    """
    if client_address.from_headers(request.headers) is not None:
        raise Problem(403, "Forbidden", "only the edges ask for blocks", type=FORBIDDEN)
    service = request.app[SERVICE]
    headers = {
        "Cache-Control": "no-store",
        BLOCKS_COMPLETE_FROM: f"{service.recent_blocks.complete_from():.3f}",
    }
    current_at = service.blocks_current_at()
    if current_at is not None:
        headers[BLOCKS_CURRENT_AT] = f"{current_at:.3f}"
    users = service.recent_blocks.users()
    return web.Response(text="".join(f"{user}\n" for user in users), headers=headers)


def _external_token(request: web.Request) -> str:
    """From `Authorization: Bearer`, or else the original path's `access_token` parameter."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        return bearer_token(authorization)
    values = request.query.getall("access_token", [])
    if len(values) > 1:
        raise Unauthenticated("more than one access_token parameter")
    if not values:
        raise Unauthenticated("missing bearer token")
    return values[0]


async def _form(request: web.Request) -> dict[str, list[str]]:
    """The urlencoded body's parameters, each with all its values; OAuthError if malformed."""
    if request.content_type != FORM_CONTENT_TYPE:
        raise oauth.invalid_request(f"Content-Type must be {FORM_CONTENT_TYPE}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise oauth.invalid_request("request body too large") from None
    try:
        return parse_qs(
            raw.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise oauth.invalid_request("the body is not a valid urlencoded form") from None
