"""Signing in a browser (authorization code + PKCE, refresh-token rotation) as use cases on
in-memory fakes: the authorization request's checks, codes and refresh tokens used once,
reuse revoking what was issued, sessions, logout and revocation."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from contracts import EventType
from contracts.cloudevents import cloud_event
from services.auth.authorization import (
    WEB_CLIENT_ID,
    AuthorizationError,
    AuthorizationRequest,
    UnsafeToRedirect,
    parse_authorize,
    pkce_matches,
    web_client,
)
from services.auth.service import InvalidCredentials
from services.auth.sign_in import (
    CODE_TTL_S,
    PENDING_REQUEST_TTL_S,
    SESSION_TTL_S,
    ExpiredRequest,
    InvalidGrant,
    LoginPage,
    SignedIn,
    SignIn,
    TokenSet,
    UnknownClient,
    digest,
)
from services.common.auth.jwt import verify_jwt
from services.common.errors import Unavailable
from services.common.messaging.envelope import validate
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.auth import InMemorySignIn
from tests.unit.test_auth_use_cases import ISSUER, Auth, quick_keys  # noqa: F401 (fixture)

ORIGINS = ("https://127.0.0.1:8443", "https://localhost:8443")
CALLBACK = "https://127.0.0.1:8443/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
CLIENTS = {WEB_CLIENT_ID: web_client(ORIGINS)}


def query(**params: str) -> dict[str, list[str]]:
    valid = {
        "response_type": "code",
        "client_id": WEB_CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    merged = {name: value for name, value in (valid | params).items() if value != "-"}
    return {name: [value] for name, value in merged.items()}


def request(**params: str) -> AuthorizationRequest:
    return parse_authorize(query(**params), CLIENTS)


def location_params(location: str) -> Mapping[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


# --- the authorization request -------------------------------------------------------------


def test_the_web_client_is_registered_at_each_public_origin():
    client = CLIENTS[WEB_CLIENT_ID]
    assert client.redirect_uris == {f"{origin}/callback" for origin in ORIGINS}
    assert client.post_logout_redirect_uris == {f"{origin}/" for origin in ORIGINS}
    assert client.access_token_ttl_s == 300


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "someone-else"},
        {"client_id": "-"},
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": CALLBACK + "/"},
        {"redirect_uri": "-"},
    ],
)
def test_an_unknown_client_or_redirect_uri_is_never_redirected_to(params):
    with pytest.raises(UnsafeToRedirect):
        request(**params)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"code_challenge": "-"}, "invalid_request"),
        ({"code_challenge_method": "-"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"code_challenge": "x" * 129}, "invalid_request"),
        ({"code_challenge": "+" * 43}, "invalid_request"),
        ({"nonce": "-"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "shopmesh"}, "invalid_scope"),
        ({"prompt": "consent"}, "invalid_request"),
    ],
)
def test_a_bad_authorization_request_is_refused_at_the_redirect_uri_with_its_state(params, error):
    with pytest.raises(AuthorizationError) as refused:
        request(**params)
    location = refused.value.location()
    assert location.startswith(CALLBACK + "?")
    assert location_params(location)["error"] == error
    assert location_params(location)["state"] == "st-1"


def test_a_request_without_state_is_refused_at_the_redirect_uri():
    with pytest.raises(AuthorizationError) as refused:
        request(state="-")
    assert location_params(refused.value.location())["error"] == "invalid_request"
    assert "state" not in location_params(refused.value.location())


def test_a_parameter_sent_twice_is_refused():
    twice = query() | {"nonce": ["a", "b"]}
    with pytest.raises(AuthorizationError):
        parse_authorize(twice, CLIENTS)


def test_pkce_s256_matches_the_rfc_example_and_nothing_else():
    assert pkce_matches(VERIFIER, CHALLENGE)
    assert not pkce_matches(VERIFIER[:-1] + "Y", CHALLENGE)
    assert not pkce_matches(CHALLENGE, CHALLENGE)
    assert not pkce_matches("short", CHALLENGE)


# --- the flow ------------------------------------------------------------------------------


class Browser:
    """A browser's cookies, as the handlers keep them."""

    def __init__(self) -> None:
        self.session: str | None = None
        self.binding: str | None = None


class SignInWorld:
    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self.repository = InMemorySignIn()
        self.sign_in = SignIn(auth.service, self.repository, CLIENTS, clock=auth.clock)
        auth.credentials.set_password("alice", "secret")

    async def authorize(self, browser: Browser, **params: str) -> SignedIn | LoginPage:
        outcome = await self.sign_in.authorize(request(**params), browser.session, browser.binding)
        if isinstance(outcome, LoginPage):
            browser.binding = outcome.browser
        return outcome

    async def code(self, browser: Browser, password: str = "secret", **params: str) -> str:
        """Through the login page if the browser has no session; the code it is sent back with."""
        outcome = await self.authorize(browser, **params)
        if isinstance(outcome, LoginPage):
            outcome = await self.sign_in.login(
                outcome.request_id, browser.binding, "alice", password
            )
            browser.session = outcome.session_id
        returned = location_params(outcome.location)
        assert returned["state"] == params.get("state", "st-1")
        return returned["code"]

    async def tokens(self, browser: Browser | None = None) -> TokenSet:
        code = await self.code(browser or Browser())
        return await self.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)


async def world() -> SignInWorld:
    return SignInWorld(await Auth().started())


@in_a_loop
async def test_a_code_redeemed_with_its_verifier_gives_access_refresh_and_id_tokens():
    w = await world()
    tokens = await w.tokens()
    claims = await w.auth.service.verify_external(tokens.access_token)
    assert (claims["sub"], claims["client_id"]) == ("alice", WEB_CLIENT_ID)
    assert claims["exp"] - claims["iat"] == tokens.expires_in == 300
    assert tokens.scope == "openid"
    id_claims = await verify_jwt(
        tokens.id_token, w.auth.keys, issuer=ISSUER, audience=WEB_CLIENT_ID, now=w.auth.clock()
    )
    assert id_claims["sub"] == "alice"
    assert id_claims["nonce"] == "n-1"
    assert id_claims["auth_time"] == int(w.auth.clock())
    assert tokens.refresh_token
    # The access token is an API token: the edge's exchange accepts it.
    exchanged = await w.auth.service.exchange(tokens.access_token)
    assert exchanged.claims["sub"] == "alice"


@in_a_loop
async def test_only_hashes_of_the_secrets_are_stored():
    w = await world()
    browser = Browser()
    code = await w.code(browser)
    tokens = await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)
    assert browser.session is not None
    assert set(w.repository.sessions) == {digest(browser.session)}
    assert set(w.repository.codes) == {digest(code)}
    assert set(w.repository.refresh_tokens) == {digest(tokens.refresh_token)}


@in_a_loop
async def test_a_wrong_verifier_is_invalid_grant():
    w = await world()
    code = await w.code(Browser())
    wrong = "A" * 43
    with pytest.raises(InvalidGrant):
        await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, wrong)


@in_a_loop
async def test_a_code_used_twice_is_refused_and_revokes_the_tokens_it_gave():
    w = await world()
    code = await w.code(Browser())
    first = await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)
    with pytest.raises(InvalidGrant):
        await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, first.refresh_token)


@in_a_loop
async def test_a_code_for_another_redirect_uri_is_invalid_grant():
    w = await world()
    code = await w.code(Browser())
    with pytest.raises(InvalidGrant):
        await w.sign_in.redeem_code(
            WEB_CLIENT_ID, code, "https://localhost:8443/callback", VERIFIER
        )


@in_a_loop
async def test_an_expired_code_is_invalid_grant():
    w = await world()
    code = await w.code(Browser())
    w.auth.clock.advance(CODE_TTL_S + 1)
    with pytest.raises(InvalidGrant):
        await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)


@in_a_loop
async def test_an_unknown_code_or_client_is_refused():
    w = await world()
    with pytest.raises(InvalidGrant):
        await w.sign_in.redeem_code(WEB_CLIENT_ID, "made-up", CALLBACK, VERIFIER)
    code = await w.code(Browser())
    with pytest.raises(UnknownClient):
        await w.sign_in.redeem_code("shopmesh-cli", code, CALLBACK, VERIFIER)


@in_a_loop
async def test_a_refresh_token_is_replaced_at_each_use():
    w = await world()
    first = await w.tokens()
    w.auth.clock.advance(10)
    second = await w.sign_in.refresh(WEB_CLIENT_ID, first.refresh_token)
    third = await w.sign_in.refresh(WEB_CLIENT_ID, second.refresh_token)
    assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
    claims = await w.auth.service.verify_external(third.access_token)
    assert claims["sub"] == "alice"
    id_claims = await verify_jwt(
        third.id_token, w.auth.keys, issuer=ISSUER, audience=WEB_CLIENT_ID, now=w.auth.clock()
    )
    assert "nonce" not in id_claims


@in_a_loop
async def test_a_refresh_token_used_again_revokes_its_whole_family():
    w = await world()
    first = await w.tokens()
    second = await w.sign_in.refresh(WEB_CLIENT_ID, first.refresh_token)
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, first.refresh_token)
    # The thief's or the client's: the newest token of the family is dead too.
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, second.refresh_token)
    assert all(family.revoked for family in w.repository.families.values())


@in_a_loop
async def test_a_blocked_user_gets_no_new_tokens():
    w = await world()
    tokens = await w.tokens()
    w.auth.users.block("alice")
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)
    w.auth.users.users["alice"] = replace(w.auth.users.users["alice"], blocked=False)
    with pytest.raises(InvalidGrant):  # the family stays revoked once unblocked
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)


@in_a_loop
async def test_with_users_down_a_refresh_or_code_is_not_spent_so_a_retry_works():
    w = await world()
    tokens = await w.tokens()
    code = await w.code(Browser())
    w.auth.users.down = True
    with pytest.raises(Unavailable):
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)
    with pytest.raises(Unavailable):
        await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)
    w.auth.users.down = False
    assert (await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)).refresh_token
    assert (await w.sign_in.redeem_code(WEB_CLIENT_ID, code, CALLBACK, VERIFIER)).refresh_token


@in_a_loop
async def test_a_user_blocked_event_ends_the_users_sessions_and_revokes_their_families():
    w = await world()
    browser = Browser()
    tokens = await w.tokens(browser)
    blocked = cloud_event(
        source="users", type=EventType.USER_BLOCKED, subject="user/alice", data={"userId": "alice"}
    )
    await w.sign_in.on_user_event(None, validate(blocked))
    assert not w.repository.sessions
    assert all(family.revoked for family in w.repository.families.values())
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)


@in_a_loop
async def test_a_signed_in_browser_gets_a_code_without_the_login_page():
    w = await world()
    browser = Browser()
    await w.code(browser)
    again = await w.authorize(browser, state="st-2")
    assert isinstance(again, SignedIn)
    assert location_params(again.location)["state"] == "st-2"
    assert again.session_id is None


@in_a_loop
async def test_prompt_none_without_a_session_is_login_required():
    w = await world()
    with pytest.raises(AuthorizationError) as refused:
        await w.authorize(Browser(), prompt="none")
    assert refused.value.error == "login_required"
    assert location_params(refused.value.location())["state"] == "st-1"


@in_a_loop
async def test_prompt_none_with_a_session_gives_a_code():
    w = await world()
    browser = Browser()
    await w.code(browser)
    assert isinstance(await w.authorize(browser, prompt="none"), SignedIn)


@in_a_loop
async def test_a_session_ends_after_its_time_and_for_a_blocked_user():
    w = await world()
    browser = Browser()
    await w.code(browser)
    w.auth.clock.advance(SESSION_TTL_S + 1)
    assert isinstance(await w.authorize(browser), LoginPage)
    fresh = Browser()
    await w.code(fresh)
    w.auth.users.block("alice")
    assert isinstance(await w.authorize(fresh), LoginPage)
    assert fresh.session is not None
    assert digest(fresh.session) not in w.repository.sessions


@in_a_loop
async def test_the_login_form_answers_only_the_browser_that_opened_it():
    w = await world()
    page = await w.authorize(Browser())
    assert isinstance(page, LoginPage)
    for binding in (None, "another-browser"):
        with pytest.raises(ExpiredRequest):
            await w.sign_in.login(page.request_id, binding, "alice", "secret")


@in_a_loop
async def test_the_login_form_expires_and_is_used_once():
    w = await world()
    page = await w.authorize(Browser())
    assert isinstance(page, LoginPage)
    await w.sign_in.login(page.request_id, page.browser, "alice", "secret")
    with pytest.raises(ExpiredRequest):
        await w.sign_in.login(page.request_id, page.browser, "alice", "secret")
    late = await w.authorize(Browser())
    assert isinstance(late, LoginPage)
    w.auth.clock.advance(PENDING_REQUEST_TTL_S + 1)
    with pytest.raises(ExpiredRequest):
        await w.sign_in.login(late.request_id, late.browser, "alice", "secret")


@in_a_loop
async def test_a_wrong_password_on_the_login_form_keeps_the_request_and_counts_a_failure():
    w = await world()
    page = await w.authorize(Browser())
    assert isinstance(page, LoginPage)
    with pytest.raises(InvalidCredentials):
        await w.sign_in.login(page.request_id, page.browser, "alice", "wrong")
    assert sum(attempts for _, attempts in w.auth.attempts.windows.values()) == 2
    signed_in = await w.sign_in.login(page.request_id, page.browser, "alice", "secret")
    assert "code" in location_params(signed_in.location)


@in_a_loop
async def test_logout_ends_the_session_and_revokes_its_refresh_tokens():
    w = await world()
    browser = Browser()
    tokens = await w.tokens(browser)
    await w.sign_in.logout(browser.session)
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)
    assert isinstance(await w.authorize(browser), LoginPage)


@in_a_loop
async def test_revoking_a_refresh_token_revokes_its_family_and_ends_its_session():
    w = await world()
    browser = Browser()
    tokens = await w.tokens(browser)
    await w.sign_in.revoke(WEB_CLIENT_ID, tokens.access_token)  # not a refresh token: no-op
    await w.sign_in.revoke(WEB_CLIENT_ID, tokens.refresh_token)
    with pytest.raises(InvalidGrant):
        await w.sign_in.refresh(WEB_CLIENT_ID, tokens.refresh_token)
    assert isinstance(await w.authorize(browser), LoginPage)


@in_a_loop
async def test_pruning_forgets_what_expired():
    w = await world()
    await w.tokens()
    await w.authorize(Browser())
    w.auth.clock.advance(SESSION_TTL_S + 1)
    assert await w.sign_in.prune() == 3
    assert not w.repository.refresh_tokens
    assert not w.repository.codes


def test_the_stored_digest_is_sha256_hex():
    assert digest("x") == hashlib.sha256(b"x").hexdigest()
