"""Any bytes a client can put into auth's form fields, credentials, tokens and paths are a 4xx
or an answer, never a 5xx; what reaches the database is text Postgres can store.

The real app over FakeAuthService (real grant parsing, verification and ext_authz logic), made
to look clients and users up as Postgres would. POST /auth/token answers errors in OAuth's own
JSON format (RFC 6749 §5.2); every other route answers problem+json.
"""

import asyncio
import base64
import json

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from services.auth import api
from services.auth.app import http_app
from services.auth.oauth import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_PASSWORD,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
)
from tests.unit.hostile_text import (
    assert_client_error_or_success,
    header_value_bytes,
    hostile_bytes,
    hostile_bytes_up_to,
    percent_encoded,
    raw_http,
    store_as_postgres_would,
)
from tests.unit.test_auth_oauth import FakeAuthService, basic, external

PROPERTY = settings(max_examples=200, deadline=None)
FORM = "application/x-www-form-urlencoded"
OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "invalid_scope",
    "invalid_target",
    "unsupported_grant_type",
}
TOKEN_PARAMETERS = (
    "username",
    "password",
    "client_id",
    "client_secret",
    "scope",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "audience",
)


class StoringAuthService(FakeAuthService):
    """FakeAuthService whose client and credential lookups query as Postgres would."""

    async def password_grant(self, username, password, scope, client, *, client_address=""):
        store_as_postgres_would(username)
        return await super().password_grant(username, password, scope, client)

    async def authenticate_client(self, credentials):
        store_as_postgres_would(credentials.client_id)
        return await super().authenticate_client(credentials)


def app():
    made = http_app()
    made[api.SERVICE] = StoringAuthService()
    return made


def send(method, url, **kwargs) -> tuple[int, str, bytes]:
    async def go():
        async with TestClient(TestServer(app())) as client:
            resp = await client.request(method, url, **kwargs)
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    return asyncio.run(go())


def form(params: dict[str, bytes | None]) -> bytes:
    pairs = (f"{name}={percent_encoded(raw)}" for name, raw in params.items() if raw is not None)
    return "&".join(pairs).encode("ascii")


def assert_oauth_answer(status: int, content_type: str, body: bytes) -> None:
    """Never a 5xx; a 4xx is an RFC 6749 error object."""
    assert status < 500, body
    assert content_type.startswith("application/json"), (status, content_type, body)
    if status >= 400:
        assert json.loads(body)["error"] in OAUTH_ERRORS, body


# Basic credentials: base64 of any bytes, or any header bytes at all.
basic_authorization = st.one_of(
    hostile_bytes_up_to(100).map(lambda raw: b"Basic " + base64.b64encode(raw)),
    header_value_bytes.map(lambda raw: b"Basic " + raw),
)
value = hostile_bytes_up_to(100)


def grant(grant_type: str, required: tuple[str, ...]) -> st.SearchStrategy[dict]:
    """A token request of `grant_type` with its required parameters and any of the others."""
    optional = [name for name in TOKEN_PARAMETERS if name not in required]
    return st.fixed_dictionaries(
        {"grant_type": st.just(grant_type.encode()), **dict.fromkeys(required, value)},
        optional=dict.fromkeys(optional, value),
    )


token_requests = st.one_of(
    grant(GRANT_PASSWORD, ("username", "password")),
    grant(GRANT_CLIENT_CREDENTIALS, ("client_id", "client_secret")),
    grant(GRANT_TOKEN_EXCHANGE, ("subject_token",)).map(
        lambda params: {"subject_token_type": TOKEN_TYPE_ACCESS_TOKEN.encode(), **params}
    ),
    st.fixed_dictionaries({"grant_type": value}, optional=dict.fromkeys(TOKEN_PARAMETERS, value)),
)


# --- properties ----------------------------------------------------------------------------


@PROPERTY
@given(params=token_requests)
def test_any_token_request_form_is_an_oauth_answer_never_a_server_error(params):
    reply = send("POST", "/auth/token", data=form(params), headers={"Content-Type": FORM})
    assert_oauth_answer(*reply)


@PROPERTY
@given(authorization=basic_authorization, params=token_requests)
def test_any_basic_client_credentials_are_an_oauth_answer_never_a_server_error(
    authorization, params
):
    params = {name: raw for name, raw in params.items() if name != "client_secret"}
    head = b"POST /auth/token HTTP/1.1\r\nHost: t\r\nContent-Type: " + FORM.encode() + b"\r\n"
    head += b"Authorization: " + authorization + b"\r\n"
    assert_oauth_answer(*raw_http(app(), head, form(params)))


@PROPERTY
@given(authorization=basic_authorization, token=st.none() | hostile_bytes)
def test_any_introspection_request_is_a_problem_or_an_answer_never_a_server_error(
    authorization, token
):
    head = b"POST /auth/introspect HTTP/1.1\r\nHost: t\r\nContent-Type: " + FORM.encode()
    head += b"\r\nAuthorization: " + authorization + b"\r\n"
    assert_client_error_or_success(*raw_http(app(), head, form({"token": token})))


@PROPERTY
@given(tail=hostile_bytes_up_to(200), bearer=header_value_bytes, query=hostile_bytes_up_to(200))
def test_any_ext_authz_check_is_a_problem_or_an_answer_never_a_server_error(tail, bearer, query):
    path = f"/auth/ext-authz/{percent_encoded(tail)}?access_token={percent_encoded(query)}"
    with_header = path.encode("ascii"), b"Authorization: Bearer " + bearer + b"\r\n"
    for target, authorization in (with_header, (path.encode("ascii"), b"")):
        head = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + authorization
        assert_client_error_or_success(*raw_http(app(), head))


# --- the cases behind the properties --------------------------------------------------------


def test_a_nul_in_the_username_is_invalid_request_naming_the_field():
    data = {"grant_type": "password", "username": "alice\x00", "password": "right"}
    status, content_type, body = send("POST", "/auth/token", data=data)
    assert (status, content_type) == (400, "application/json; charset=utf-8")
    assert json.loads(body) == {
        "error": "invalid_request",
        "error_description": "username must not contain control characters",
    }


def test_a_nul_in_a_basic_client_id_is_invalid_client():
    status, _, body = send(
        "POST",
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic("cli\x00", "right")},
    )
    assert (status, json.loads(body)["error"]) == (401, "invalid_client")


def test_basic_credentials_that_are_not_base64_ascii_are_invalid_client():
    head = b"POST /auth/token HTTP/1.1\r\nHost: t\r\nContent-Type: " + FORM.encode() + b"\r\n"
    head += "Authorization: Basic ü\r\n".encode()
    status, _, body = raw_http(app(), head, b"grant_type=client_credentials")
    assert (status, json.loads(body)["error"]) == (401, "invalid_client")


def test_a_bearer_token_that_is_not_utf8_is_a_401_problem_at_ext_authz():
    head = b"GET /auth/ext-authz/orders HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer a.\xff.c\r\n"
    status, content_type, body = raw_http(app(), head)
    assert (status, content_type) == (401, "application/problem+json")
    assert json.loads(body)["detail"] == "authorization is not a bearer token"


def test_a_token_exchange_still_answers_an_internal_token():
    data = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": external(),
        "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
    }
    status, _, body = send("POST", "/auth/token", data=data)
    assert status == 200
    assert json.loads(body)["access_token"].startswith("ey")


def test_a_query_with_a_nul_is_no_bearer_token_at_ext_authz():
    status, content_type, _ = send("GET", URL("/auth/ext-authz/x?access_token=%00", encoded=True))
    assert (status, content_type) == (401, "application/problem+json")
