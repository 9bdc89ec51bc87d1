"""HTTP entrypoints of signing in a browser: the authorization endpoint, the login form, the
end-session and revocation endpoints (the token endpoint's code and refresh grants are in
services/auth/api.py). The flow itself is services/auth/sign_in.py.

A person sees HTML (services/auth/pages.py); a client hears OAuth: a redirect with
`error` to its registered redirect_uri, or the RFC 6749 §5.2 JSON of /auth/revoke.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from services.auth import pages
from services.auth.authorization import (
    AuthorizationError,
    UnsafeToRedirect,
    parse_authorize,
    redirect_location,
)
from services.auth.login_limits import TooManyFailedLogins
from services.auth.service import InvalidCredentials, UserBlocked
from services.auth.sign_in import (
    PENDING_REQUEST_TTL_S,
    SESSION_TTL_S,
    ExpiredRequest,
    LoginPage,
    SignedIn,
    SignIn,
    UnknownClient,
)
from services.common import client_address
from services.common.db import DATABASE_UNAVAILABLE
from services.common.errors import Unavailable
from services.common.fields import character_error

log = logging.getLogger(__name__)

SIGN_IN = web.AppKey("sign_in", SignIn)

# Both cookies are auth's alone (Path=/auth), unreadable by scripts, sent over TLS only, and
# not on cross-site POSTs (SameSite=Lax): a form posted from another site carries neither.
SESSION_COOKIE = "__Secure-shopmesh-session"
# The browser that opened a login page: its pending request answers only a form that comes
# with this cookie (login CSRF: another site cannot sign a browser in as someone else).
BROWSER_COOKIE = "__Secure-shopmesh-browser"
COOKIE_PATH = "/auth"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 8
MAX_QUERY_FIELDS = 16
MAX_FIELD_LENGTH = 1024

WRONG_CREDENTIALS = "Wrong username or password."
EXPIRED = "This sign-in page has expired. Go back to the application and sign in again."
_CANNOT_ANSWER: tuple[type[BaseException], ...] = (Unavailable, *DATABASE_UNAVAILABLE)

routes = web.RouteTableDef()


def _set_cookie(response: web.StreamResponse, name: str, value: str, max_age_s: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="Lax",
    )


def _clear_cookie(response: web.StreamResponse, name: str) -> None:
    # With the attributes it was set with: a browser ignores a __Secure- cookie without Secure.
    response.del_cookie(name, path=COOKIE_PATH, secure=True, httponly=True, samesite="Lax")


def _found(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _unavailable() -> web.Response:
    response = pages.error_page(
        503, "Try again shortly", "Signing in is not possible at the moment. Try again shortly."
    )
    response.headers["Retry-After"] = "1"
    return response


@routes.get("/auth/authorize")
async def authorize(request: web.Request) -> web.Response:
    sign_in = request.app[SIGN_IN]
    try:
        query = parse_qs(
            request.rel_url.raw_query_string,
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
        parsed = parse_authorize(query, sign_in.clients)
        outcome = await sign_in.authorize(
            parsed, request.cookies.get(SESSION_COOKIE), request.cookies.get(BROWSER_COOKIE)
        )
    except (UnsafeToRedirect, UnicodeDecodeError, ValueError) as exc:
        detail = str(exc) if isinstance(exc, UnsafeToRedirect) else "malformed query string"
        log.info("authorization request refused", extra={"reason": detail})
        return pages.error_page(400, "Cannot sign in", f"The sign-in request is invalid: {detail}.")
    except AuthorizationError as exc:
        return _found(exc.location())
    except _CANNOT_ANSWER:
        return _unavailable()
    if isinstance(outcome, SignedIn):
        return _found(outcome.location)
    return _login_page(outcome)


def _login_page(outcome: LoginPage) -> web.Response:
    response = pages.login_page(outcome.request_id, outcome.request.redirect_uri)
    _set_cookie(response, BROWSER_COOKIE, outcome.browser, PENDING_REQUEST_TTL_S)
    return response


@routes.post("/auth/login")
async def login(request: web.Request) -> web.Response:
    sign_in = request.app[SIGN_IN]
    browser = request.cookies.get(BROWSER_COOKIE)
    form = await _form(request)
    if form is None:
        return pages.error_page(400, "Cannot sign in", EXPIRED)
    request_id, username, password = form
    try:
        pending = await sign_in.pending(request_id, browser)
        signed_in = await sign_in.login(
            request_id, browser, username, password, client_address=_client_address(request)
        )
    except ExpiredRequest:
        return pages.error_page(400, "Cannot sign in", EXPIRED)
    except InvalidCredentials:
        return pages.login_page(
            request_id, pending.redirect_uri, status=401, message=WRONG_CREDENTIALS,
            username=username,
        )  # fmt: skip
    except UserBlocked:
        return pages.login_page(
            request_id, pending.redirect_uri, status=403, message="This account is blocked."
        )
    except TooManyFailedLogins as exc:
        return pages.login_page(
            request_id,
            pending.redirect_uri,
            status=429,
            message=f"Too many failed sign-ins. Try again in {exc.retry_after_s} seconds.",
            username=username,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    except _CANNOT_ANSWER:
        return _unavailable()
    response = _found(signed_in.location)
    if signed_in.session_id is not None:
        _set_cookie(response, SESSION_COOKIE, signed_in.session_id, SESSION_TTL_S)
    return response


@routes.get("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    """OIDC RP-Initiated Logout: end the session; back to a registered post_logout_redirect_uri
    (with `state`) or a signed-out page. An unregistered one is refused, never followed."""
    sign_in = request.app[SIGN_IN]
    target = request.query.getall("post_logout_redirect_uri", [])
    state = request.query.getall("state", [])
    registered = {
        uri for client in sign_in.clients.values() for uri in client.post_logout_redirect_uris
    }
    if len(target) > 1 or len(state) > 1 or (target and target[0] not in registered):
        return pages.error_page(400, "Cannot sign out", "The sign-out request is invalid.")
    try:
        await sign_in.logout(request.cookies.get(SESSION_COOKIE))
    except _CANNOT_ANSWER:
        return _unavailable()
    response: web.Response
    if target:
        response = _found(redirect_location(target[0], {"state": state[0]} if state else {}))
    else:
        response = pages.signed_out_page()
    _clear_cookie(response, SESSION_COOKIE)
    return response


@routes.post("/auth/revoke")
async def revoke(request: web.Request) -> web.Response:
    """RFC 7009 for public clients: `token` (a refresh token) and `client_id`; 200 whatever the
    token was. Also ends the browser's session when its cookie comes along."""
    sign_in = request.app[SIGN_IN]
    form = await _fields(request)
    token, client_id = _one(form, "token"), _one(form, "client_id")
    if form is None or token is None or client_id is None:
        return _oauth_error(400, "invalid_request", "one token and one client_id are required")
    try:
        await sign_in.revoke(client_id, token)
        await sign_in.logout(request.cookies.get(SESSION_COOKIE))
    except UnknownClient:
        return _oauth_error(401, "invalid_client", "unknown client")
    except _CANNOT_ANSWER:
        return _oauth_error(503, "temporarily_unavailable", "the database does not answer")
    response = web.Response(status=200, headers={"Cache-Control": "no-store"})
    if SESSION_COOKIE in request.cookies:
        _clear_cookie(response, SESSION_COOKIE)
    return response


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


def _client_address(request: web.Request) -> str:
    return client_address.from_headers(request.headers) or request.remote or "unknown"


async def _form(request: web.Request) -> tuple[str, str, str] | None:
    """(request id, username, password) of the login form; None if it is not one."""
    fields = await _fields(request)
    values = [_one(fields, name) for name in ("request", "username", "password")]
    request_id, username, password = values
    if request_id is None or username is None or password is None:
        return None
    return request_id, username, password


async def _fields(request: web.Request) -> dict[str, list[str]] | None:
    if request.content_type != FORM_CONTENT_TYPE:
        return None
    try:
        raw = await request.read()
        return parse_qs(
            raw.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (web.HTTPRequestEntityTooLarge, UnicodeDecodeError, ValueError):
        return None


def _one(fields: dict[str, Any] | None, name: str) -> str | None:
    """The field's one value, if it is sent once, short and storable (TAB allowed, as in the
    password grant's form values)."""
    if fields is None:
        return None
    values = fields.get(name, [])
    if len(values) != 1 or len(values[0]) > MAX_FIELD_LENGTH:
        return None
    value: str = values[0]
    return None if character_error(value, allowed="\t") is not None else value
