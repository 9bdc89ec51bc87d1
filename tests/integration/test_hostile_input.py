"""Hostile text through the real edge: a NUL, lone surrogates (JSON "\\ud800" escapes, and the raw
bytes %ED%A0%80 in URLs), other control characters and very long strings in the text fields and
parameters of every public route are refused with a 4xx, never a 5xx, and nothing is stored.

Each route refuses in its own documented format: problem+json from orders, notifications and
auth's problem routes, and from the edge itself (a request the transcoder cannot turn into
gRPC); the transcoder's JSON status (`{"code": 3, ...}`) for an error of users or payments
(docs/gateway.md); OAuth's error object from POST /auth/token (RFC 6749 §5.2).

The module sends several hundred requests through the edge, more than one user's 100 a minute:
each test that sends more than a few does so as a user of its own (`own`, from the session's
fresh users), and the property test takes a new one per example, so no test drains alice's or
bob's budget for the modules after it. What needs an admin (users' and payments' fields behind
their authorization) stays the admin's: about 50 requests here.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import grpc
import httpx
import pytest
from hypothesis import given, settings

from mesh.topology import Topology
from services.auth.oauth import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN
from shopmesh.users.v1 import users_pb2
from tests.support import FreshClient
from tests.unit.hostile_text import ascii_json, hostile_text

PROBLEM = "application/problem+json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
# google.rpc.Code values a refusal may carry; never UNKNOWN (2) or INTERNAL (13).
CLIENT_CODES = {3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 7: "PERMISSION_DENIED"}
# JSON string escapes, written as they travel: lone surrogates stay escapes on the wire.
NUL, HIGH, LOW, ESC = "\\u0000", "\\ud800", "\\udfff", "\\u001b"
# A GetUserRequest whose user_id holds the bytes of a lone surrogate: not UTF-8.
NOT_UTF8_GET_USER = b"\n\x03\xed\xa0\x80"


@pytest.fixture(scope="module")
def anonymous(topology: Topology) -> Iterator[httpx.Client]:
    """The edge without a token (auth's routes need none)."""
    with httpx.Client(
        base_url=f"http://{topology.bind_host}:{topology.edge.http_port}", timeout=10.0
    ) as client:
        yield client


@pytest.fixture
def own(edge_as_fresh) -> FreshClient:
    """A user of this test's own, with its own budget at the edge."""
    return edge_as_fresh()


@pytest.fixture(scope="module")
def admin(edge_as) -> httpx.Client:
    """Users and payments check the caller before a field: an admin reaches every field."""
    return edge_as("admin")


def assert_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body = resp.json()
    assert body["status"] == status
    return body


def assert_refused_by_transcoded_route(resp: httpx.Response) -> None:
    """A 4xx: the edge's own problem, or the service's status with a client error code."""
    assert 400 <= resp.status_code < 500, resp.text
    if resp.headers["content-type"].startswith(PROBLEM):
        assert resp.json()["status"] == resp.status_code
    else:
        assert resp.json()["code"] in CLIENT_CODES, resp.text


def refused_by_the_edge(resp: httpx.Response) -> bool:
    """Whether the edge answered itself: it may refuse header bytes before a service sees them."""
    return resp.headers["content-type"].startswith(PROBLEM) and resp.json()["type"] in {
        "/problems/edge",
        "/problems/request-headers-too-large",
    }


def assert_oauth_error(resp: httpx.Response, status: int, error: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"] == error


def order_count(own: FreshClient) -> int:
    resp = own.http.get("/orders", params={"userId": own.user_id})
    assert resp.status_code == 200, resp.text
    return len(resp.json())


def literal(text: str) -> str:
    return json.dumps(text)


def order_body(user_id: str, product_id: str = '"book"') -> bytes:
    """An order whose userId and productId are JSON string literals written by hand."""
    items = f'[{{"productId": {product_id}, "quantity": 1}}]'
    return f'{{"userId": {user_id}, "items": {items}}}'.encode()


def emails_of_all_users(admin: httpx.Client) -> set[str]:
    emails: set[str] = set()
    token = ""
    while True:
        resp = admin.get("/users", params={"pageSize": 100, "pageToken": token})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        emails.update(user["email"] for user in page["users"])
        token = page["nextPageToken"]
        if not token:
            return emails


# --- orders ----------------------------------------------------------------------------------

HOSTILE_LITERALS = {
    "a NUL": (f'"bob{NUL}"', 422),
    "another control character": (f'"{ESC}[2J"', 422),
    "a lone high surrogate": (f'"bob{HIGH}"', 400),
    "a lone low surrogate": (f'"{LOW}"', 400),
    "a very long string": (json.dumps("a" * 10_000), 422),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LITERALS))
def test_a_hostile_user_id_in_an_order_is_a_problem_and_stores_nothing(own, case) -> None:
    hostile, status = HOSTILE_LITERALS[case]
    before = order_count(own)
    resp = own.http.post("/orders", content=order_body(user_id=hostile), headers=JSON)
    problem = assert_problem(resp, status)
    assert "userId" in problem["detail"]
    assert order_count(own) == before


@pytest.mark.parametrize("case", sorted(HOSTILE_LITERALS))
def test_a_hostile_product_id_in_an_order_is_a_problem_and_stores_nothing(own, case) -> None:
    hostile, status = HOSTILE_LITERALS[case]
    before = order_count(own)
    body = order_body(user_id=literal(own.user_id), product_id=hostile)
    resp = own.http.post("/orders", content=body, headers=JSON)
    problem = assert_problem(resp, status)
    assert "items[0].productId" in problem["detail"]
    assert order_count(own) == before


def test_a_lone_surrogate_in_a_member_name_of_an_order_is_a_400_problem(own) -> None:
    raw = b'{"userId": "alice", "items": [], "\\ud800": 1}'
    problem = assert_problem(own.http.post("/orders", content=raw, headers=JSON), 400)
    assert problem["type"] == "/problems/malformed-request"


@pytest.mark.parametrize("key", [b"k-\xff\xfe", b"\xed\xa0\x80", b"k" * 201, b"k\tk"])
def test_a_hostile_idempotency_key_is_a_400_problem_and_stores_nothing(own, key) -> None:
    before = order_count(own)
    body = order_body(user_id=literal(own.user_id))
    resp = own.http.post("/orders", content=body, headers={**JSON, "Idempotency-Key": key})
    problem = assert_problem(resp, 400)
    if not refused_by_the_edge(resp):
        assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert order_count(own) == before


@pytest.mark.parametrize("value", ["bob%00", "alice%00", "%01", "a" * 2000])
def test_a_nul_or_another_unstorable_query_parameter_is_a_400_problem(own, value) -> None:
    problem = assert_problem(own.http.get(f"/orders?userId={value}"), 400)
    assert problem["errors"][0]["field"] == "userId"


def test_bytes_that_are_not_utf8_in_a_query_parameter_are_another_users_id_not_an_error(
    own,
) -> None:
    # The service reads %ED%A0%80 as U+FFFD three times over: someone else's user id.
    assert_problem(own.http.get(f"/orders?userId={own.user_id}%ED%A0%80"), 403)


@pytest.mark.parametrize(
    "path", ["/orders/%00", "/orders/%ED%A0%80", "/orders/" + "f" * 3000, "/orders/x%00/cancel"]
)
def test_a_junk_order_id_is_a_404_problem(own, path) -> None:
    method = "POST" if path.endswith("/cancel") else "GET"
    assert_problem(own.http.request(method, path), 404)


@settings(max_examples=30, deadline=None)
@given(user_id=hostile_text, product_id=hostile_text)
def test_any_text_in_an_order_is_a_problem_or_an_order_never_a_server_error(
    edge_as_fresh, user_id, product_id
) -> None:
    # Up to 4 requests an example, 30 examples: a user of its own for each.
    own = edge_as_fresh()
    for body in (
        {"userId": own.user_id, "items": [{"productId": product_id, "quantity": 1}]},
        {"userId": user_id, "items": [{"productId": "book", "quantity": 1}]},
    ):
        resp = own.http.post("/orders", content=ascii_json(body), headers=JSON)
        assert resp.status_code < 500, resp.text
        if resp.status_code >= 400:
            assert_problem(resp, resp.status_code)
        else:
            fetched = own.http.get(resp.headers["location"])
            assert fetched.json()["items"] == body["items"]


# --- users (transcoded) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "email"),
    [
        (f'"Eve{NUL}"', None),
        (f'"Eve{HIGH}"', None),
        (f'"{LOW}Eve"', None),
        (f'"Eve{ESC}"', None),
        (json.dumps("E" * 5000), None),
        ('"Eve"', f'"eve{NUL}@example.com"'),
        ('"Eve"', f'"eve{HIGH}@example.com"'),
    ],
)
def test_hostile_fields_of_a_new_user_are_refused_and_no_user_is_created(
    admin, name, email
) -> None:
    unique = f"hostile-{uuid.uuid4().hex}@example.com"
    email = email or json.dumps(unique)
    raw = f'{{"name": {name}, "email": {email}}}'.encode()
    assert_refused_by_transcoded_route(admin.post("/users", content=raw, headers=JSON))
    assert unique not in emails_of_all_users(admin)


@pytest.mark.parametrize(
    "path", ["/users/%00", "/users/%ED%A0%80", "/users/bob%01", "/users/" + "u" * 3000]
)
def test_a_junk_user_id_in_the_path_is_refused(admin, path) -> None:
    assert_refused_by_transcoded_route(admin.get(path))
    assert_refused_by_transcoded_route(
        admin.post(f"{path}:block", content=b'{"reason": "x"}', headers=JSON)
    )


def test_a_nul_or_a_lone_surrogate_in_a_block_reason_is_refused(admin, fresh_user) -> None:
    # A fresh user as the target: were the refusal to fail, bob would stay blocked.
    target = fresh_user().id
    for reason in (f'"spam{NUL}"', f'"spam{HIGH}"'):
        raw = f'{{"reason": {reason}}}'.encode()
        assert_refused_by_transcoded_route(
            admin.post(f"/users/{target}:block", content=raw, headers=JSON)
        )
    assert admin.get(f"/users/{target}").json()["blocked"] is False


def test_a_page_token_around_a_lone_surrogate_is_refused(admin) -> None:
    position = b'["2026-11-29T10:15:00+00:00", "a\\ud800"]'
    forged = base64.urlsafe_b64encode(position).decode().rstrip("=")
    for token in (forged, "%00", "%ED%A0%80"):
        assert_refused_by_transcoded_route(admin.get(f"/users?pageToken={token}"))


def test_a_grpc_request_whose_string_is_not_utf8_is_invalid_argument_through_the_edge(
    topology, tokens
) -> None:
    metadata = (("authorization", f"Bearer {tokens.external('admin')}"),)
    with grpc.insecure_channel(f"{topology.bind_host}:{topology.edge.http_port}") as channel:
        get_user = channel.unary_unary(
            "/shopmesh.users.v1.UserService/GetUser",
            request_serializer=lambda raw: raw,
            response_deserializer=users_pb2.User.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            get_user(NOT_UTF8_GET_USER, timeout=10, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


# --- payments (transcoded) -------------------------------------------------------------------


def payment_count(own: FreshClient) -> int:
    count, token = 0, ""
    while True:
        resp = own.http.get(
            "/payments", params={"userId": own.user_id, "pageSize": 100, "pageToken": token}
        )
        assert resp.status_code == 200, resp.text
        count += len(resp.json()["payments"])
        token = resp.json()["nextPageToken"]
        if not token:
            return count


@pytest.mark.parametrize(
    "order_id", [f'"o{NUL}"', f'"o{HIGH}"', f'"{LOW}"', f'"o{ESC}"', json.dumps("o" * 5000)]
)
def test_a_hostile_order_id_of_a_payment_is_refused_and_nothing_is_charged(own, order_id) -> None:
    before = payment_count(own)
    user_id = literal(own.user_id)
    raw = f'{{"orderId": {order_id}, "userId": {user_id}, "amount": 100, "currency": "RUB"}}'
    resp = own.http.post("/payments", content=raw.encode(), headers=JSON)
    assert_refused_by_transcoded_route(resp)
    assert payment_count(own) == before


@pytest.mark.parametrize(
    "path",
    [
        "/payments/%00",
        "/payments/%ED%A0%80",
        "/payments/" + "p" * 3000,
        "/payments?userId=bob%00",
        "/payments?userId=alice&pageToken=%00",
        "/payments?userId=alice&pageToken=%ED%A0%80",
        "/payments/%00:watch",
    ],
)
def test_junk_payment_ids_and_list_parameters_are_refused(admin, path) -> None:
    assert_refused_by_transcoded_route(admin.get(path))


# --- notifications ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["userId=bob%00", "userId=%01", "limit=" + "9" * 5000, "after=%00", "after=%ED%A0%80"]
)
def test_hostile_history_parameters_are_400_problems(own, query) -> None:
    assert_problem(own.http.get(f"/notifications?{query}"), 400)


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "grant_type=password&username=alice%00&password=x",
        "grant_type=password&username=alice&password=x%00",
        "grant_type=password&username=alice%ED%A0%80&password=x",
        "grant_type=password&username=alice&password=x&scope=shopmesh%00",
        "grant_type=password&username=alice&password=x&client_id=cli%00",
        "grant_type=client_credentials&client_id=cli%00&client_secret=s",
        "grant_type=%00",
        f"grant_type={quote(GRANT_TOKEN_EXCHANGE)}&subject_token=a%00"
        f"&subject_token_type={quote(TOKEN_TYPE_ACCESS_TOKEN)}",
        "grant_type=password&username=" + "a" * 9000 + "&password=x",
    ],
)
def test_hostile_token_request_fields_are_invalid_request(anonymous, form) -> None:
    assert_oauth_error(
        anonymous.post("/auth/token", content=form, headers=FORM), 400, "invalid_request"
    )


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic " + base64.b64encode(b"cli\x00:secret"),
        b"Basic " + base64.b64encode(b"cli:\xed\xa0\x80"),
        b"Basic \xc3\xbc",
        b"Basic \xff\xfe",
    ],
)
def test_hostile_basic_credentials_are_invalid_client(anonymous, authorization) -> None:
    headers = {**FORM, "Authorization": authorization}
    token = anonymous.post("/auth/token", content="grant_type=client_credentials", headers=headers)
    introspection = anonymous.post("/auth/introspect", content="token=x", headers=headers)
    if refused_by_the_edge(token):
        assert_problem(token, token.status_code)
        assert_problem(introspection, introspection.status_code)
    else:
        assert_oauth_error(token, 401, "invalid_client")
        assert_problem(introspection, 401)


# (aiohttp answers a header line over 8190 bytes with a plain 400 of its own)
@pytest.mark.parametrize("token", [b"a.\xff.c", b"\xed\xa0\x80", b"a" * 8000])
def test_a_hostile_bearer_token_is_a_401_problem_at_the_ext_authz_check(anonymous, token) -> None:
    resp = anonymous.get("/auth/ext-authz/orders", headers={"Authorization": b"Bearer " + token})
    assert_problem(resp, resp.status_code if refused_by_the_edge(resp) else 401)


@pytest.mark.parametrize("query", ["access_token=%00", "access_token=%ED%A0%80"])
def test_a_hostile_access_token_parameter_is_a_401_problem_at_the_ext_authz_check(
    anonymous, query
) -> None:
    assert_problem(anonymous.get(f"/auth/ext-authz/orders?{query}"), 401)
