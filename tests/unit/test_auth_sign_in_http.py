"""The sign-in endpoints' HTTP layer (authorize, login page and form, token grants, logout,
revoke) over the real use cases on in-memory fakes, on a loopback test server. Cookies are
carried by hand: they are Secure, and the test server speaks plain HTTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

from aiohttp import ClientResponse, DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from services.auth import api, sign_in_api
from services.auth.app import http_app
from services.auth.sign_in import SignIn
from tests.unit.fakes.auth import InMemorySignIn
from tests.unit.test_auth_sign_in import CALLBACK, CHALLENGE, CLIENTS, VERIFIER
from tests.unit.test_auth_use_cases import LIMITS, Auth, quick_keys  # noqa: F401 (fixture)

FORM = "application/x-www-form-urlencoded"
AUTHORIZE = {
    "response_type": "code",
    "client_id": "shopmesh-web",
    "redirect_uri": CALLBACK,
    "scope": "openid",
    "state": "st-1",
    "nonce": "n-1",
    "code_challenge": CHALLENGE,
    "code_challenge_method": "S256",
}


class Client:
    def __init__(self, http: TestClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: object
    ) -> ClientResponse:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        headers = (headers or {}) | ({"Cookie": cookie} if cookie else {})
        resp = await self.http.request(
            method, path, headers=headers, allow_redirects=False, **kwargs
        )
        for header in resp.headers.getall("Set-Cookie", []):
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return resp

    async def authorize(self, **params: str) -> ClientResponse:
        return await self.request("GET", "/auth/authorize?" + urlencode(AUTHORIZE | params))

    async def login_page_request_id(self) -> str:
        page = await (await self.authorize()).text()
        found = re.search(r'name="request" value="([^"]+)"', page)
        assert found is not None
        return found.group(1)

    async def login(self, request_id: str, password: str = "secret") -> ClientResponse:
        form = {"request": request_id, "username": "alice", "password": password}
        return await self.request("POST", "/auth/login", data=form)

    async def token(self, **form: str) -> ClientResponse:
        return await self.request("POST", "/auth/token", data=form)

    async def code(self) -> str:
        signed_in = await self.login(await self.login_page_request_id())
        location = signed_in.headers["Location"]
        found = re.search(r"[?&]code=([^&]+)", location)
        assert found is not None
        return found.group(1)


def served(test: Callable[[Client, Auth], Awaitable[None]]) -> Callable[[], None]:
    def run() -> None:
        async def go() -> None:
            auth = await Auth().started()
            auth.credentials.set_password("alice", "secret")
            app = http_app()
            app[api.SERVICE] = auth.service
            app[sign_in_api.SIGN_IN] = SignIn(
                auth.service, InMemorySignIn(), CLIENTS, clock=auth.clock
            )
            async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as http:
                await test(Client(http), auth)

        asyncio.run(go())

    run.__name__ = test.__name__
    return run


def set_cookie(resp: ClientResponse, name: str) -> str:
    return next(header for header in resp.headers.getall("Set-Cookie") if header.startswith(name))


@served
async def test_an_unknown_client_gets_an_html_error_page_not_a_redirect(client, _auth):
    for params in ({"client_id": "evil"}, {"redirect_uri": "https://evil.example/callback"}):
        resp = await client.authorize(**params)
        assert resp.status == 400
        assert resp.content_type == "text/html"
        assert "Location" not in resp.headers


@served
async def test_a_request_without_pkce_is_sent_back_with_an_error_and_its_state(client, _auth):
    resp = await client.authorize(code_challenge_method="plain")
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    assert "error=invalid_request" in location
    assert "state=st-1" in location


@served
async def test_prompt_none_without_a_session_redirects_login_required(client, _auth):
    resp = await client.authorize(prompt="none")
    assert resp.status == 302
    assert "error=login_required" in resp.headers["Location"]


@served
async def test_the_login_page_is_accessible_self_contained_and_locked_down(client, _auth):
    resp = await client.authorize()
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<html lang="en">' in page
    assert 'name="viewport"' in page
    assert '<label for="username">' in page and '<label for="password">' in page
    assert 'autocomplete="username"' in page and 'autocomplete="current-password"' in page
    assert '<form method="post" action="/auth/login">' in page
    assert "<script" not in page and "http://" not in page and "src=" not in page
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://127.0.0.1:8443" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert resp.headers["Cache-Control"] == "no-store"
    cookie = set_cookie(resp, sign_in_api.BROWSER_COOKIE)
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/auth"):
        assert attribute in cookie


@served
async def test_a_sign_in_sets_the_session_cookie_and_redirects_with_code_and_state(client, _auth):
    resp = await client.login(await client.login_page_request_id())
    assert resp.status == 302
    assert resp.headers["Location"].startswith(CALLBACK + "?code=")
    assert "state=st-1" in resp.headers["Location"]
    cookie = set_cookie(resp, sign_in_api.SESSION_COOKIE)
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/auth", "Max-Age=28800"):
        assert attribute in cookie
    again = await client.authorize(state="st-2")
    assert again.status == 302
    assert "code=" in again.headers["Location"] and "state=st-2" in again.headers["Location"]


@served
async def test_a_state_with_reserved_characters_comes_back_unchanged(client, _auth):
    resp = await client.login(await client.login_page_request_id())
    assert "state=st-1" in resp.headers["Location"]
    odd = "a&b=c d/é"
    again = await client.authorize(state=odd)
    assert again.status == 302
    assert parse_qs(urlsplit(again.headers["Location"]).query)["state"] == [odd]


@served
async def test_wrong_credentials_show_the_page_again_with_a_plain_message(client, _auth):
    request_id = await client.login_page_request_id()
    resp = await client.login(request_id, password="not-it")
    assert resp.status == 401
    page = await resp.text()
    assert "Wrong username or password." in page
    assert "not-it" not in page
    assert request_id in page


@served
async def test_a_login_form_without_the_browsers_cookie_is_refused(client, _auth):
    request_id = await client.login_page_request_id()
    client.cookies.clear()
    resp = await client.login(request_id)
    assert resp.status == 400
    assert resp.content_type == "text/html"
    assert sign_in_api.SESSION_COOKIE not in client.cookies


@served
async def test_too_many_failed_sign_ins_answer_429_with_retry_after(client, _auth):
    request_id = await client.login_page_request_id()
    for _ in range(LIMITS.per_user):
        assert (await client.login(request_id, password="wrong")).status == 401
    resp = await client.login(request_id)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert resp.content_type == "text/html"


@served
async def test_the_token_endpoint_redeems_a_code_once_and_rotates_refresh_tokens(client, _auth):
    code = await client.code()
    grant = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": "shopmesh-web",
        "code_verifier": VERIFIER,
    }
    resp = await client.token(**grant)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {
        "access_token", "token_type", "expires_in", "refresh_token", "id_token", "scope",
    }  # fmt: skip
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 300)
    reused = await client.token(**grant)
    assert (reused.status, (await reused.json())["error"]) == (400, "invalid_grant")
    refresh = {"grant_type": "refresh_token", "client_id": "shopmesh-web"}
    resp = await client.token(**refresh, refresh_token=body["refresh_token"])
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant")


@served
async def test_a_refresh_token_is_rotated_and_its_reuse_is_invalid_grant(client, _auth):
    code = await client.code()
    first = await (
        await client.token(
            grant_type="authorization_code",
            code=code,
            redirect_uri=CALLBACK,
            client_id="shopmesh-web",
            code_verifier=VERIFIER,
        )
    ).json()
    refresh = {"grant_type": "refresh_token", "client_id": "shopmesh-web"}
    second = await client.token(**refresh, refresh_token=first["refresh_token"])
    assert second.status == 200
    assert (await second.json())["refresh_token"] != first["refresh_token"]
    reuse = await client.token(**refresh, refresh_token=first["refresh_token"])
    assert (reuse.status, (await reuse.json())["error"]) == (400, "invalid_grant")


@served
async def test_logout_goes_back_only_to_a_registered_uri_and_ends_the_session(client, _auth):
    await client.code()
    refused = await client.request(
        "GET", "/auth/logout?" + urlencode({"post_logout_redirect_uri": "https://evil.example/"})
    )
    assert refused.status == 400
    assert "Location" not in refused.headers
    resp = await client.request(
        "GET",
        "/auth/logout?"
        + urlencode({"post_logout_redirect_uri": "https://127.0.0.1:8443/", "state": "bye"}),
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "https://127.0.0.1:8443/?state=bye"
    cleared = set_cookie(resp, sign_in_api.SESSION_COOKIE)
    assert "Max-Age=0" in cleared and "Secure" in cleared and "Path=/auth" in cleared
    assert sign_in_api.SESSION_COOKIE not in client.cookies
    assert (await client.authorize()).status == 200


@served
async def test_revoke_answers_200_and_refuses_an_unknown_client(client, _auth):
    resp = await client.request(
        "POST", "/auth/revoke", data={"token": "anything", "client_id": "shopmesh-web"}
    )
    assert resp.status == 200
    unknown = await client.request(
        "POST", "/auth/revoke", data={"token": "anything", "client_id": "nobody"}
    )
    assert (unknown.status, (await unknown.json())["error"]) == (401, "invalid_client")
    missing = await client.request("POST", "/auth/revoke", data={"client_id": "shopmesh-web"})
    assert (missing.status, (await missing.json())["error"]) == (400, "invalid_request")


@served
async def test_hostile_sign_in_input_is_a_4xx_never_a_500(client, _auth):
    request_id = await client.login_page_request_id()
    authorize = await client.request("GET", "/auth/authorize?client_id=%ff%fe&state=%00")
    assert authorize.status == 400
    for body, content_type in (
        (b"request=" + request_id.encode() + b"&username=a%00&password=p", FORM),
        (b"request=x&username=%ed%a0%80&password=p", FORM),
        (b"request=x&username=\xff&password=p", FORM),
        (b'{"request": "x"}', "application/json"),
        (b"&".join(b"f%d=1" % n for n in range(100)), FORM),
    ):
        resp = await client.request(
            "POST", "/auth/login", data=body, headers={"Content-Type": content_type}
        )
        assert resp.status == 400, body
        assert resp.content_type == "text/html"
    revoke = await client.request(
        "POST", "/auth/revoke", data=b"token=%ff&client_id=shopmesh-web",
        headers={"Content-Type": FORM},
    )  # fmt: skip
    assert revoke.status == 400
