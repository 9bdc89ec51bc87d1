"""Signing a browser in through the real edge: OIDC authorization code + PKCE against the
real auth (Postgres, users), with an HTTP client keeping cookies like a browser does.

Redirects to the client (`/callback`, the post-logout page) are read from `Location`, not
followed: they are the web client's to handle, and a client following one to a web front end
would see that client redeem the code itself."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from mesh.components.edge import issuer, public_origins
from mesh.runtime import demo
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from shopmesh.users.v1 import users_pb2, users_pb2_grpc
from tests.support import FreshUser

CLIENT_ID = "shopmesh-web"


@pytest.fixture(scope="module")
def origin(mesh: Mesh) -> str:
    return public_origins(mesh.topology, mesh.placement)[0]


@pytest.fixture(scope="module")
def callback(origin: str) -> str:
    return f"{origin}/callback"


class Browser:
    """An HTTPS client of the edge that keeps cookies (the auth session's among them)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        context = ssl.create_default_context(cafile=str(edge_certs(mesh.state).ca_cert))
        self.http = httpx.Client(verify=context, timeout=10.0, follow_redirects=False)
        self.verifier = secrets.token_urlsafe(48)
        self.issuer = issuer(mesh.topology, mesh.placement)

    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def authorize(self, callback: str, **params: str) -> httpx.Response:
        query = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": callback,
            "scope": "openid",
            "state": "state-1",
            "nonce": "nonce-1",
            "code_challenge": self.challenge(),
            "code_challenge_method": "S256",
        }
        query = {name: value for name, value in (query | params).items() if value != "-"}
        return self.http.get(f"{self.issuer}/authorize?{urlencode(query)}")

    def login(self, page: httpx.Response, user: str, password: str) -> httpx.Response:
        assert page.status_code == 200, page.text
        found = re.search(r'name="request" value="([^"]+)"', page.text)
        assert found is not None, page.text
        form = {"request": found.group(1), "username": user, "password": password}
        return self.http.post(f"{self.issuer}/login", data=form)

    def sign_in(self, callback: str, user: str = "alice") -> dict[str, str]:
        """Through the login page unless the browser is signed in already; the parameters the
        browser is sent back to the client with."""
        page = self.authorize(callback)
        if page.status_code == 302:
            return returned(page, callback)
        signed_in = self.login(page, user, demo.password(self.mesh.state, user))
        return returned(signed_in, callback)

    def token(self, **form: str) -> httpx.Response:
        return self.http.post(f"{self.issuer}/token", data={"client_id": CLIENT_ID, **form})

    def redeem(self, code: str, callback: str, verifier: str | None = None) -> httpx.Response:
        return self.token(
            grant_type="authorization_code",
            code=code,
            redirect_uri=callback,
            code_verifier=verifier or self.verifier,
        )

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.token(grant_type="refresh_token", refresh_token=refresh_token)


def returned(resp: httpx.Response, to: str) -> dict[str, str]:
    """The query of a redirect to `to`."""
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.split("?")[0] == to, location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def invalid_grant(resp: httpx.Response) -> bool:
    return resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


@pytest.fixture
def browser(mesh: Mesh) -> Iterator[Browser]:
    made = Browser(mesh)
    yield made
    made.http.close()


def orders_of(browser: Browser, access_token: str, user: str = "alice") -> httpx.Response:
    return browser.http.get(
        f"https://{browser.mesh.placement.public()}:{browser.mesh.topology.edge.https_port}/orders",
        params={"userId": user},
        headers={"Authorization": f"Bearer {access_token}"},
    )


def test_discovery_names_the_code_flow_endpoints(browser: Browser) -> None:
    document = browser.http.get(f"{browser.issuer}/.well-known/openid-configuration").json()
    assert document["authorization_endpoint"] == f"{browser.issuer}/authorize"
    assert document["end_session_endpoint"] == f"{browser.issuer}/logout"
    assert document["revocation_endpoint"] == f"{browser.issuer}/revoke"
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token"} <= set(document["grant_types_supported"])


def test_a_browser_signs_in_calls_orders_refreshes_and_signs_out(
    browser: Browser, callback: str, origin: str
) -> None:
    page = browser.authorize(callback)
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    back = browser.sign_in(callback)
    assert back["state"] == "state-1"

    resp = browser.redeem(back["code"], callback)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == (
        "Bearer",
        300,
        "openid",
    )
    assert {"access_token", "refresh_token", "id_token"} <= set(tokens)
    orders = orders_of(browser, tokens["access_token"])
    assert orders.status_code == 200, orders.text

    refreshed = browser.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    assert orders_of(browser, refreshed.json()["access_token"]).status_code == 200

    # Signed in: the next authorization needs no login page.
    again = returned(browser.authorize(callback, state="state-2"), callback)
    assert again["state"] == "state-2" and "code" in again

    logout = browser.http.get(
        f"{browser.issuer}/logout",
        params={"post_logout_redirect_uri": f"{origin}/", "state": "bye"},
    )
    assert returned(logout, f"{origin}/") == {"state": "bye"}
    assert invalid_grant(browser.refresh(refreshed.json()["refresh_token"]))
    after = returned(browser.authorize(callback, prompt="none"), callback)
    assert after["error"] == "login_required"


def test_a_refresh_token_used_twice_revokes_the_family(browser: Browser, callback: str) -> None:
    tokens = browser.redeem(browser.sign_in(callback)["code"], callback).json()
    rotated = browser.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert invalid_grant(browser.refresh(tokens["refresh_token"]))
    assert invalid_grant(browser.refresh(rotated.json()["refresh_token"]))


def test_codes_are_refused_with_a_wrong_verifier_redirect_uri_or_a_second_time(
    browser: Browser, callback: str, origin: str
) -> None:
    code = browser.sign_in(callback)["code"]
    assert invalid_grant(browser.redeem(code, callback, verifier=secrets.token_urlsafe(48)))
    code = browser.sign_in(callback)["code"]
    other = "https://localhost:8443/callback" if "127.0.0.1" in origin else f"{origin}/other"
    assert invalid_grant(browser.redeem(code, other))
    code = browser.sign_in(callback)["code"]
    first = browser.redeem(code, callback)
    assert first.status_code == 200, first.text
    assert invalid_grant(browser.redeem(code, callback))
    # What the reused code gave is revoked.
    assert invalid_grant(browser.refresh(first.json()["refresh_token"]))


def test_unknown_clients_and_redirect_uris_get_an_error_page_not_a_redirect(
    browser: Browser, callback: str
) -> None:
    for params in ({"client_id": "someone"}, {"redirect_uri": "https://evil.example/callback"}):
        resp = browser.authorize(callback, **params)
        assert resp.status_code == 400
        assert resp.headers["content-type"].startswith("text/html")
        assert "location" not in resp.headers


def test_a_request_without_pkce_goes_back_with_an_error(browser: Browser, callback: str) -> None:
    back = returned(browser.authorize(callback, code_challenge="-"), callback)
    assert (back["error"], back["state"]) == ("invalid_request", "state-1")
    back = returned(browser.authorize(callback, code_challenge_method="plain"), callback)
    assert back["error"] == "invalid_request"


def test_wrong_credentials_show_the_login_page_again(browser: Browser, callback: str) -> None:
    resp = browser.login(browser.authorize(callback), "bob", "not-bobs-password")
    assert resp.status_code == 401
    assert "Wrong username or password." in resp.text
    assert "not-bobs-password" not in resp.text


def test_a_login_form_posted_without_the_browsers_cookie_is_refused(
    browser: Browser, callback: str, mesh: Mesh
) -> None:
    page = browser.authorize(callback)
    browser.http.cookies.clear()
    resp = browser.login(page, "alice", demo.password(mesh.state, "alice"))
    assert resp.status_code == 400
    assert "location" not in resp.headers


def test_revoking_the_refresh_token_ends_the_sign_in(browser: Browser, callback: str) -> None:
    tokens = browser.redeem(browser.sign_in(callback)["code"], callback).json()
    resp = browser.http.post(
        f"{browser.issuer}/revoke",
        data={"token": tokens["refresh_token"], "client_id": CLIENT_ID},
    )
    assert resp.status_code == 200
    assert invalid_grant(browser.refresh(tokens["refresh_token"]))
    page = browser.authorize(callback)
    assert page.status_code == 200 and 'name="request"' in page.text


def test_a_blocked_user_gets_no_new_tokens_and_is_signed_out(
    browser: Browser,
    callback: str,
    fresh_user: Callable[[], FreshUser],
    users_grpc: users_pb2_grpc.UserServiceStub,
) -> None:
    user = fresh_user()
    tokens = browser.redeem(browser.sign_in(callback, user.id)["code"], callback).json()
    users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user.id, reason="sign-in test"))
    assert invalid_grant(browser.refresh(tokens["refresh_token"]))
    page = browser.authorize(callback)
    assert page.status_code == 200 and 'name="request"' in page.text
