"""The token endpoint's protocol (grant parsing, OAuth error codes) and auth's HTTP layer over a
fake service layer (loopback test server, no database)."""

import asyncio
import base64
import json
from datetime import UTC, datetime

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.auth import api, oauth
from services.auth.app import http_app
from services.auth.cache import ExchangeCache
from services.auth.clients import UnknownUser, UserInfo, UsersUnavailable
from services.auth.keys import Rotation
from services.auth.login_limits import Scope, TooManyFailedLogins
from services.auth.oauth import (
    GRANT_TOKEN_EXCHANGE,
    PUBLIC_CLIENT_ID,
    TOKEN_TYPE_ACCESS_TOKEN,
    ClientCredentialsGrant,
    OAuthError,
    PasswordGrant,
    TokenExchangeGrant,
    parse_token_request,
)
from services.auth.service import AuthService, InvalidClient, InvalidCredentials, IssuedToken
from services.auth.tokens import (
    GTY_PASSWORD,
    external_claims,
    generate_signing_key,
    internal_claims,
    sign,
)

ISSUER = "https://127.0.0.1:8443/auth"
KEY = generate_signing_key(datetime.now(UTC))


def basic(client_id, secret):
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def form(**params):
    return {
        name: values if isinstance(values, list) else [values] for name, values in params.items()
    }


# --- parsing -------------------------------------------------------------------------------


def test_a_password_grant_without_a_client_is_the_public_clients():
    grant = parse_token_request(form(grant_type="password", username="alice", password="pw"), None)
    assert grant == PasswordGrant("alice", "pw", ("shopmesh",), None)
    assert parse_token_request(
        form(grant_type="password", username="a", password="p", client_id=PUBLIC_CLIENT_ID), None
    ) == PasswordGrant("a", "p", ("shopmesh",), None)


def test_client_credentials_from_basic_are_url_decoded():
    grant = parse_token_request(
        form(grant_type="client_credentials", scope="shopmesh openid"),
        basic("my%20cli", "s%3Acret"),
    )
    assert isinstance(grant, ClientCredentialsGrant)
    assert (grant.client.client_id, grant.client.secret) == ("my cli", "s:cret")
    assert grant.client.method == "client_secret_basic"
    assert grant.scope == ("shopmesh", "openid")


def test_client_credentials_from_the_form():
    grant = parse_token_request(
        form(grant_type="client_credentials", client_id="cli", client_secret="s"), None
    )
    assert grant.client.method == "client_secret_post"


def test_a_token_exchange_grant():
    grant = parse_token_request(
        form(
            grant_type=GRANT_TOKEN_EXCHANGE,
            subject_token="ext",
            subject_token_type=TOKEN_TYPE_ACCESS_TOKEN,
        ),
        None,
    )
    assert grant == TokenExchangeGrant("ext", None)


EXCHANGE = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN}


@pytest.mark.parametrize(
    ("params", "authorization", "error", "status"),
    [
        ({}, None, "invalid_request", 400),
        ({"grant_type": "implicit"}, None, "unsupported_grant_type", 400),
        ({"grant_type": "authorization_code"}, None, "invalid_request", 400),
        (
            {
                "grant_type": "authorization_code",
                "client_id": "w",
                "code": "c",
                "redirect_uri": "r",
            },
            None,
            "invalid_request",
            400,
        ),
        ({"grant_type": "refresh_token", "client_id": "w"}, None, "invalid_request", 400),
        (
            {
                "grant_type": "refresh_token",
                "client_id": "w",
                "refresh_token": "t",
                "client_secret": "s",
            },
            None,
            "invalid_client",
            401,
        ),
        (
            {"grant_type": "refresh_token", "refresh_token": "t"},
            basic("w", "s"),
            "invalid_client",
            401,
        ),
        ({"grant_type": ["password", "password"]}, None, "invalid_request", 400),
        ({"grant_type": "password", "username": "alice"}, None, "invalid_request", 400),
        ({"grant_type": "password", "password": "pw"}, None, "invalid_request", 400),
        (
            {"grant_type": "password", "username": "a", "password": "p", "scope": "admin"},
            None,
            "invalid_scope",
            400,
        ),
        (
            {"grant_type": "password", "username": "a", "password": "p", "client_id": "cli"},
            None,
            "invalid_client",
            401,
        ),
        ({"grant_type": "client_credentials"}, None, "invalid_client", 401),
        ({"grant_type": "client_credentials"}, "Bearer abc", "invalid_client", 401),
        ({"grant_type": "client_credentials"}, "Basic !!!notbase64", "invalid_client", 401),
        ({"grant_type": "client_credentials"}, "Basic " + "bm9jb2xvbg==", "invalid_client", 401),
        (
            {"grant_type": "client_credentials", "client_secret": "s"},
            basic("cli", "s"),
            "invalid_request",
            400,
        ),
        (
            {"grant_type": "client_credentials", "client_id": "other"},
            basic("cli", "s"),
            "invalid_request",
            400,
        ),
        ({"grant_type": "client_credentials", "client_secret": "s"}, None, "invalid_request", 400),
        ({**EXCHANGE}, None, "invalid_request", 400),
        (
            {**EXCHANGE, "subject_token": "t", "subject_token_type": "x"},
            None,
            "invalid_request",
            400,
        ),
        ({**EXCHANGE, "subject_token": "t", "actor_token": "a"}, None, "invalid_request", 400),
        (
            {**EXCHANGE, "subject_token": "t", "requested_token_type": "saml"},
            None,
            "invalid_request",
            400,
        ),
        ({**EXCHANGE, "subject_token": "t", "audience": "payments"}, None, "invalid_target", 400),
        (
            {"grant_type": "password", "username": "x" * 9000, "password": "p"},
            None,
            "invalid_request",
            400,
        ),
    ],
)
def test_bad_token_requests_map_to_the_rfc_error_codes(params, authorization, error, status):
    with pytest.raises(OAuthError) as refused:
        parse_token_request(form(**params), authorization)
    assert (refused.value.error, refused.value.status) == (error, status)
    if status == 401:
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")


def test_the_discovery_document_is_built_from_the_issuer():
    document = oauth.discovery_document(ISSUER)
    assert document["issuer"] == ISSUER
    assert document["jwks_uri"] == f"{ISSUER}/jwks"
    assert document["token_endpoint"] == f"{ISSUER}/token"
    assert document["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert document["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert GRANT_TOKEN_EXCHANGE in document["grant_types_supported"]


def test_the_discovery_document_describes_the_code_flow_with_pkce():
    document = oauth.discovery_document(ISSUER)
    assert document["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert document["end_session_endpoint"] == f"{ISSUER}/logout"
    assert document["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token"} <= set(document["grant_types_supported"])


# --- the HTTP layer ------------------------------------------------------------------------


class MemoryKeys:
    async def key(self, kid):
        return KEY.verification_key if kid == KEY.kid else None

    def sign(self, claims):
        return sign(claims, KEY)

    def jwks(self):
        return {"keys": [KEY.public_jwk]}


class FakeUsers:
    def __init__(self, blocked=(), down=False):
        self.blocked = set(blocked)
        self.down = down

    async def get_user(self, user_id):
        if self.down:
            raise UsersUnavailable(
                grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
                )
            )
        if user_id not in {"alice", "bob"}:
            raise UnknownUser(user_id)
        return UserInfo(user_id, frozenset({"user"}), user_id in self.blocked)


class FakeAuthService(AuthService):
    """The real ext_authz and verification logic; grants answered without a database."""

    def __init__(self, users=None):
        super().__init__(
            None, MemoryKeys(), users or FakeUsers(), issuer=ISSUER, cache=ExchangeCache()
        )

    async def password_grant(self, username, password, scope, client, *, client_address=""):
        if password != "right":
            raise InvalidCredentials(username)
        return IssuedToken("external-token", 900, "shopmesh")

    async def authenticate_client(self, credentials):
        if credentials.secret != "right":
            raise InvalidClient(credentials.client_id)
        return credentials


def external(sub="alice"):
    now = int(datetime.now(UTC).timestamp())
    claims = external_claims(
        issuer=ISSUER, sub=sub, client_id="cli", scope=["shopmesh"], gty=GTY_PASSWORD, now=now
    )
    return sign(claims, KEY)


def call(method, path, service=None, **kwargs):
    async def go():
        app = http_app()
        app[api.SERVICE] = service or FakeAuthService()
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, **kwargs)
            body = await resp.read()
            return resp.status, dict(resp.headers), json.loads(body) if body else None

    return asyncio.run(go())


def test_the_token_endpoint_answers_tokens_with_no_store():
    status, headers, body = call(
        "POST",
        "/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "right"},
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body == {
        "access_token": "external-token",
        "token_type": "Bearer",
        "expires_in": 900,
        "scope": "shopmesh",
    }


def test_token_endpoint_errors_are_oauth_json_not_problems():
    status, headers, body = call(
        "POST",
        "/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "no"},
    )
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert body == {"error": "invalid_grant", "error_description": "invalid username or password"}


def test_a_non_form_body_is_invalid_request():
    status, _, body = call("POST", "/auth/token", json={"grant_type": "password"})
    assert (status, body["error"]) == (400, "invalid_request")


def test_an_exchange_of_a_bad_subject_token_is_invalid_request():
    data = {**EXCHANGE, "subject_token": "a.b.c"}
    status, _, body = call("POST", "/auth/token", data=data)
    assert (status, body["error"]) == (400, "invalid_request")


def test_an_exchange_answers_an_internal_jwt():
    data = {**EXCHANGE, "subject_token": external()}
    status, _, body = call("POST", "/auth/token", data=data)
    assert status == 200
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 300


def test_an_exchange_with_a_bad_client_secret_is_invalid_client():
    data = {**EXCHANGE, "subject_token": external()}
    status, headers, body = call(
        "POST", "/auth/token", data=data, headers={"Authorization": basic("cli", "wrong")}
    )
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"].startswith("Basic")


def test_users_being_down_is_temporarily_unavailable():
    data = {**EXCHANGE, "subject_token": external()}
    status, headers, body = call(
        "POST", "/auth/token", FakeAuthService(FakeUsers(down=True)), data=data
    )
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert headers["Retry-After"] == "1"


def test_ext_authz_answers_the_internal_token_in_the_authorization_header():
    status, headers, body = call(
        "POST", "/auth/ext-authz/orders?x=1", headers={"Authorization": f"Bearer {external()}"}
    )
    assert status == 200
    assert headers["Authorization"].startswith("Bearer ey")
    assert headers["Authorization"] != f"Bearer {external()}"
    assert headers["Cache-Control"].startswith("private, max-age=")
    assert int(headers["Cache-Control"].rsplit("=", 1)[1]) > 0
    assert body is None


def test_ext_authz_names_the_tokens_subject_for_the_edges_blocks():
    _, headers, _ = call(
        "GET", "/auth/ext-authz/orders", headers={"Authorization": f"Bearer {external('alice')}"}
    )
    assert headers["X-Subject"] == "alice"


def blocks(service, headers=None):
    async def go():
        app = http_app()
        app[api.SERVICE] = service
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/auth/blocks", headers=headers or {})
            return resp.status, dict(resp.headers), await resp.text()

    return asyncio.run(go())


def test_blocks_lists_the_users_blocked_lately_one_a_line_and_since_when_it_is_whole():
    service = FakeAuthService()
    service.follow_blocks(lambda: 1_800_000_123.5)
    service.invalidate_user("bob")
    service.invalidate_user("dave")

    status, headers, body = blocks(service)

    assert status == 200
    assert body == "bob\ndave\n"
    assert headers["Cache-Control"] == "no-store"
    assert float(headers["X-Blocks-Complete-From"]) <= datetime.now(UTC).timestamp()
    assert headers["X-Blocks-Current-At"] == "1800000123.500"


def test_blocks_says_no_current_time_while_the_block_events_are_not_known_handled():
    status, headers, body = blocks(FakeAuthService())

    assert (status, body) == (200, "")
    assert "X-Blocks-Complete-From" in headers
    assert "X-Blocks-Current-At" not in headers


def test_blocks_are_not_for_a_request_the_edge_routed_from_the_public():
    service = FakeAuthService()
    service.invalidate_user("bob")

    status, headers, body = blocks(service, {"x-shopmesh-client-address": "203.0.113.7"})

    assert status == 403
    assert headers["Content-Type"] == "application/problem+json"
    assert "bob" not in body


def test_ext_authz_takes_the_token_from_the_access_token_parameter():
    status, headers, _ = call("GET", f"/auth/ext-authz/notifications/ws?access_token={external()}")
    assert status == 200
    assert headers["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"Authorization": "Bearer a.b.c"}, ""),
        ({"Authorization": f"Basic {external()}"}, ""),
        ({}, "?access_token=a.b.c"),
        ({}, f"?access_token={external()}&access_token={external()}"),
    ],
)
def test_ext_authz_refuses_a_bad_token_with_a_401_problem(headers, query):
    status, reply_headers, body = call(
        "DELETE", f"/auth/ext-authz/orders/1{query}", headers=headers
    )
    assert status == 401
    assert reply_headers["Content-Type"] == "application/problem+json"
    assert reply_headers["WWW-Authenticate"].startswith("Bearer")
    assert body["type"] == "/problems/unauthenticated"
    assert body["instance"] == "/orders/1"


def test_ext_authz_refuses_a_blocked_user_with_403():
    service = FakeAuthService(FakeUsers(blocked={"bob"}))
    status, headers, body = call(
        "GET",
        "/auth/ext-authz/orders",
        service,
        headers={"Authorization": f"Bearer {external('bob')}"},
    )
    assert status == 403
    assert headers["Content-Type"] == "application/problem+json"
    assert body["type"] == "/problems/user-blocked"


def test_ext_authz_says_503_when_users_cannot_answer():
    service = FakeAuthService(FakeUsers(down=True))
    status, _, body = call(
        "GET", "/auth/ext-authz/orders", service, headers={"Authorization": f"Bearer {external()}"}
    )
    assert (status, body["type"]) == (503, "/problems/unavailable")


def test_introspection_needs_client_authentication():
    status, headers, _ = call("POST", "/auth/introspect", data={"token": external()})
    assert status == 401
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("token", ["a.b.c", "garbage", "expired"])
def test_introspection_of_an_unusable_token_is_inactive(token):
    if token == "expired":
        claims = external_claims(
            issuer=ISSUER,
            sub="alice",
            client_id="c",
            scope=["shopmesh"],
            gty=GTY_PASSWORD,
            now=1000,
        )
        token = sign(claims, KEY)
    status, _, body = call(
        "POST",
        "/auth/introspect",
        data={"token": token},
        headers={"Authorization": basic("c", "right")},
    )
    assert (status, body) == (200, {"active": False})


def test_introspection_of_an_active_token_repeats_its_claims():
    status, headers, body = call(
        "POST",
        "/auth/introspect",
        data={"token": external()},
        headers={"Authorization": basic("c", "right")},
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["active"] is True
    assert (body["sub"], body["aud"], body["iss"], body["scope"], body["client_id"]) == (
        "alice",
        "shopmesh-api",
        ISSUER,
        "shopmesh",
        "cli",
    )


def test_key_rotation_needs_an_internal_admin_token():
    status, _, body = call("POST", "/auth/keys/rotate")
    assert (status, body["type"]) == (401, "/problems/unauthenticated")
    status, _, body = call(
        "POST", "/auth/keys/rotate", headers={"Authorization": f"Bearer {external()}"}
    )
    assert status == 401


def test_discovery_is_served_at_both_well_known_paths():
    for path in ("/.well-known/openid-configuration", "/auth/.well-known/openid-configuration"):
        status, _, body = call("GET", path)
        assert (status, body["issuer"]) == (200, ISSUER)


def test_the_jwks_publishes_public_keys_only():
    status, headers, body = call("GET", "/auth/jwks")
    assert status == 200
    assert headers["Content-Type"].startswith("application/jwk-set+json")
    assert [key["kid"] for key in body["keys"]] == [KEY.kid]
    assert "d" not in body["keys"][0]


ROTATED_AT = datetime(2026, 11, 29, 12, 2, tzinfo=UTC)


class RotatingService(FakeAuthService):
    async def rotate_keys(self):
        return Rotation(KEY.kid, ROTATED_AT, "old-kid", "next-kid")


def internal(sub, roles):
    now = int(datetime.now(UTC).timestamp())
    return sign(internal_claims(sub=sub, roles=roles, now=now), KEY)


def test_an_admin_rotates_keys_and_a_user_may_not():
    status, _, body = call(
        "POST",
        "/auth/keys/rotate",
        RotatingService(),
        headers={"Authorization": f"Bearer {internal('admin', ['admin'])}"},
    )
    assert (status, body) == (
        200,
        {
            "kid": KEY.kid,
            "active_from": "2026-11-29T12:02:00+00:00",
            "retired_kid": "old-kid",
            "next_kid": "next-kid",
        },
    )
    status, _, body = call(
        "POST",
        "/auth/keys/rotate",
        RotatingService(),
        headers={"Authorization": f"Bearer {internal('alice', ['user'])}"},
    )
    assert (status, body["type"]) == (403, "/problems/forbidden")


class LockedOutService(FakeAuthService):
    """Every password grant is over the brute-force limit; the addresses it was asked for."""

    def __init__(self):
        super().__init__()
        self.addresses = []

    async def password_grant(self, username, password, scope, client, *, client_address=""):
        self.addresses.append(client_address)
        raise TooManyFailedLogins(42, Scope.USER)


def test_a_locked_out_login_is_a_429_problem_with_retry_after_and_the_edges_client_address():
    service = LockedOutService()
    status, headers, body = call(
        "POST",
        "/auth/token",
        service,
        data={"grant_type": "password", "username": "alice", "password": "right"},
        headers={"x-shopmesh-client-address": "203.0.113.9", "x-forwarded-for": "10.0.0.1"},
    )
    assert (status, headers["Retry-After"], headers["Content-Type"]) == (
        429,
        "42",
        "application/problem+json",
    )
    assert (body["type"], body["status"]) == ("/problems/too-many-failed-logins", 429)
    assert "42 s" in body["detail"]
    assert service.addresses == ["203.0.113.9"]
    # Not through the edge: the peer's address (the test client's loopback).
    call("POST", "/auth/token", service, data={"grant_type": "password", "username": "a",
                                                "password": "b"})  # fmt: skip
    assert service.addresses[1] == "127.0.0.1"
