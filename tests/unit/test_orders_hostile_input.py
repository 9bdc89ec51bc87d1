"""Any text a client can put into a field or parameter of the orders API is a 4xx problem or
accepted, never a 5xx; what reaches the service layer is text Postgres can store.

The real app (routes, problem middleware) on a loopback test server, over FakeOrders made to
fail as asyncpg and Postgres would on text they cannot store.
"""

import asyncio
import uuid

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from services.orders import api
from services.orders.app import http_app
from tests.unit.hostile_text import (
    ascii_json,
    assert_client_error_or_success,
    header_value_bytes,
    hostile_bytes,
    hostile_text,
    percent_encoded,
    raw_http,
    store_as_postgres_would,
)
from tests.unit.test_orders_api import PROBLEM, VALID, FakeOrders, Reply, as_user

PROPERTY = settings(max_examples=200, deadline=None)


class StoringOrders(FakeOrders):
    """FakeOrders whose every call stores its text arguments as Postgres would."""

    async def place_order(self, user_id, items, *, idempotency_key=None, respond_async=False):
        store_as_postgres_would(user_id, idempotency_key, *(item.product_id for item in items))
        return await super().place_order(
            user_id, items, idempotency_key=idempotency_key, respond_async=respond_async
        )

    async def list_orders(self, user_id):
        store_as_postgres_would(user_id)
        return await super().list_orders(user_id)


def app_for(fake: FakeOrders, sub: str = "root") -> web.Application:
    app = http_app()
    app.middlewares.append(as_user(sub, roles=("user", "admin")))
    app[api.SERVICE] = fake
    return app


def request(fake, method, url, *, sub="root", **kwargs) -> Reply:
    async def go():
        async with TestClient(TestServer(app_for(fake, sub))) as client:
            resp = await client.request(method, url, **kwargs)
            return Reply(resp.status, dict(resp.headers), await resp.read())

    return asyncio.run(go())


def post_json(fake, raw: bytes, headers=None) -> Reply:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return request(fake, "POST", "/orders", data=raw, headers=headers)


def assert_no_server_error(reply: Reply) -> None:
    assert_client_error_or_success(reply.status, reply.headers.get("Content-Type", ""), reply.body)


def assert_problem(reply: Reply, status: int) -> dict:
    assert (reply.status, reply.headers["Content-Type"]) == (status, PROBLEM), reply.body
    assert reply.json["status"] == status
    return reply.json


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)


# --- properties ----------------------------------------------------------------------------


@PROPERTY
@given(user_id=hostile_text)
def test_any_user_id_in_an_order_is_a_problem_or_an_order_never_a_server_error(user_id):
    fake = StoringOrders()
    body = {"userId": user_id, "items": [{"productId": "p1", "quantity": 1}]}
    reply = request(
        fake,
        "POST",
        "/orders",
        sub=user_id,
        data=ascii_json(body),
        headers={"Content-Type": "application/json"},
    )
    assert_no_server_error(reply)


@PROPERTY
@given(product_ids=st.lists(hostile_text, min_size=1, max_size=3))
def test_any_product_id_in_an_order_is_a_problem_or_an_order_never_a_server_error(product_ids):
    body = {"userId": "alice", "items": [{"productId": p, "quantity": 1} for p in product_ids]}
    assert_no_server_error(post_json(StoringOrders(), ascii_json(body)))


@PROPERTY
@given(extra=st.dictionaries(hostile_text, json_value, max_size=3), items=json_value)
def test_any_member_names_and_values_in_an_order_body_are_never_a_server_error(extra, items):
    body = {"userId": "alice", "items": items, **extra}
    assert_no_server_error(post_json(StoringOrders(), ascii_json(body)))


@PROPERTY
@given(raw=hostile_bytes)
def test_any_bytes_in_the_user_id_query_parameter_are_never_a_server_error(raw):
    url = URL(f"/orders?userId={percent_encoded(raw)}", encoded=True)
    assert_no_server_error(request(StoringOrders(), "GET", url))


@PROPERTY
@given(raw=hostile_bytes.filter(bool), cancel=st.booleans())
def test_any_bytes_as_an_order_id_are_never_a_server_error(raw, cancel):
    path = f"/orders/{percent_encoded(raw)}" + ("/cancel" if cancel else "")
    reply = request(StoringOrders(), "POST" if cancel else "GET", URL(path, encoded=True))
    assert_no_server_error(reply)


@PROPERTY
@given(key=header_value_bytes)
def test_any_idempotency_key_bytes_are_never_a_server_error(key):
    head = b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += b"Idempotency-Key: " + key + b"\r\n"
    assert_client_error_or_success(*raw_http(app_for(StoringOrders()), head, ascii_json(VALID)))


# --- the cases behind the properties --------------------------------------------------------


def test_a_nul_in_a_user_id_is_a_422_naming_the_field_and_nothing_is_stored():
    fake = StoringOrders()
    body = {"userId": "bob\x00", "items": [{"productId": "p1", "quantity": 1}]}
    problem = assert_problem(post_json(fake, ascii_json(body)), 422)
    assert problem["errors"] == [
        {"field": "userId", "message": "must not contain control characters"}
    ]
    assert fake.calls == []


def test_a_lone_surrogate_in_a_product_id_is_a_400_malformed_body_naming_the_field():
    fake = StoringOrders()
    body = {"userId": "alice", "items": [{"productId": "p\ud800", "quantity": 1}]}
    problem = assert_problem(post_json(fake, ascii_json(body)), 400)
    assert problem["type"] == "/problems/malformed-request"
    assert problem["detail"] == (
        "the body is not valid Unicode text: items[0].productId must not contain lone surrogates"
    )
    assert fake.calls == []


def test_a_lone_surrogate_in_a_member_name_is_a_400_malformed_body():
    problem = assert_problem(post_json(StoringOrders(), b'{"userId": "alice", "\\udfff": 1}'), 400)
    assert "a member name in body must not contain lone surrogates" in problem["detail"]


def test_a_nul_in_the_user_id_query_parameter_is_a_400_problem():
    fake = StoringOrders()
    problem = assert_problem(request(fake, "GET", URL("/orders?userId=bob%00", encoded=True)), 400)
    assert problem["detail"] == "query parameter userId must not contain control characters"
    assert fake.calls == []


def test_an_idempotency_key_that_is_not_utf8_is_a_400_naming_the_header():
    fake = StoringOrders()
    head = b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += b"Idempotency-Key: k-\xff\xfe\r\n"
    status, content_type, body = raw_http(app_for(fake), head, ascii_json(VALID))
    assert (status, content_type) == (400, PROBLEM)
    assert b"header Idempotency-Key must not contain lone surrogates" in body
    assert fake.calls == []


def test_a_body_nested_as_deeply_as_the_decoder_allows_is_a_client_error():
    for depth in (900, 950, 990, 1000, 5000):
        raw = b'{"userId": "alice", "items": ' + b"[" * depth + b"]" * depth + b"}"
        assert_no_server_error(post_json(StoringOrders(), raw))


def test_an_order_id_that_is_not_a_uuid_is_404_without_a_lookup():
    fake = StoringOrders()
    assert_problem(request(fake, "GET", URL("/orders/%00%ED%A0%80", encoded=True)), 404)
    assert fake.calls == []


def test_a_valid_order_still_reaches_the_service():
    fake = StoringOrders()
    reply = post_json(fake, ascii_json(VALID), {"Idempotency-Key": f"k-{uuid.uuid4()}"})
    assert reply.status == 201
    assert [call[0] for call in fake.calls] == ["place_order"]
