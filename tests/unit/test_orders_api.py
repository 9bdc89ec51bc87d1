"""The HTTP layer with a fake service layer: no database, only a loopback test server."""

import asyncio
import json
import uuid
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common.auth.middleware import PRINCIPAL
from services.common.auth.principal import Principal
from services.orders import api
from services.orders.app import MAX_BODY_BYTES, http_app
from services.orders.domain import OrderStatus, new_order
from services.orders.service import IdempotencyKeyReusedError, PlacedOrder

PROBLEM = "application/problem+json"
VALID = {"userId": "alice", "items": [{"productId": "p1", "quantity": 2}]}


@dataclass
class FakeOrders:
    """Stands in for OrderService; records every call that would touch the database."""

    calls: list[tuple] = field(default_factory=list)
    replay: bool = False
    key_reused: bool = False

    async def place_order(self, user_id, items, *, idempotency_key=None, respond_async=False):
        self.calls.append(("place_order", user_id, tuple(items), idempotency_key))
        if self.key_reused:
            raise IdempotencyKeyReusedError(idempotency_key)
        order = new_order(user_id, items)
        if respond_async:
            order = order.moved_to(OrderStatus.PAYMENT_PENDING, reason="payment queued")
        return PlacedOrder(order, replayed=self.replay)

    async def get_order(self, order_id):
        self.calls.append(("get_order", order_id))
        return None

    async def list_orders(self, user_id):
        self.calls.append(("list_orders", user_id))
        return []


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


def as_user(sub, roles=("user",)):
    """Stands in for the auth middleware: the caller is `sub`, already verified."""

    @web.middleware
    async def middleware(request, handler):
        request[PRINCIPAL] = Principal(sub=sub, roles=frozenset(roles))
        return await handler(request)

    return middleware


def call(fake, method, path, user="alice", **kwargs):
    async def go():
        app = http_app()
        app.middlewares.append(as_user(user))
        app[api.SERVICE] = fake
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, **kwargs)
            return Reply(resp.status, dict(resp.headers), await resp.read())

    return asyncio.run(go())


def post_order(fake, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(
        fake,
        "POST",
        "/orders",
        data=raw,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def assert_problem(reply, status):
    assert reply.status == status
    assert reply.headers["Content-Type"] == PROBLEM
    assert reply.json["status"] == status
    return reply.json


def test_valid_order_is_created_with_location():
    fake = FakeOrders()
    reply = post_order(fake, VALID)
    assert reply.status == 201
    assert reply.json["totalPrice"] == 200
    assert reply.json["status"] == "PENDING"
    assert reply.headers["Location"] == f"/orders/{reply.json['id']}"
    assert "Idempotent-Replayed" not in reply.headers
    assert fake.calls[0][0] == "place_order"


def test_idempotency_key_reaches_the_service_and_replays_are_marked():
    fake = FakeOrders(replay=True)
    reply = post_order(fake, VALID, {"Idempotency-Key": "k-1"})
    assert reply.status == 201
    assert reply.headers["Idempotent-Replayed"] == "true"
    assert fake.calls[0][3] == "k-1"


def test_reused_idempotency_key_with_another_body_is_unprocessable():
    reply = post_order(FakeOrders(key_reused=True), VALID, {"Idempotency-Key": "k-1"})
    problem = assert_problem(reply, 422)
    assert problem["type"] == "/problems/idempotency-key-reused"


@pytest.mark.parametrize("key", ["", " ", "k" * 201])
def test_empty_or_overlong_idempotency_key_is_a_bad_request(key):
    fake = FakeOrders()
    problem = assert_problem(post_order(fake, VALID, {"Idempotency-Key": key}), 400)
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert fake.calls == []


def test_idempotency_key_of_two_hundred_characters_is_accepted():
    assert post_order(FakeOrders(), VALID, {"Idempotency-Key": "k" * 200}).status == 201


@pytest.mark.parametrize(
    "raw", [b'{"userId": "a", ', b"[1]", b"", b"\xff", b'{"userId": NaN}', b"42"]
)
def test_malformed_bodies_are_bad_requests_and_store_nothing(raw):
    fake = FakeOrders()
    problem = assert_problem(post_order(fake, raw), 400)
    assert problem["type"] == "/problems/malformed-request"
    assert problem["instance"] == "/orders"
    assert fake.calls == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_a_bad_request(content_type):
    fake = FakeOrders()
    reply = call(
        fake, "POST", "/orders", data=json.dumps(VALID), headers={"Content-Type": content_type}
    )
    assert "Content-Type" in assert_problem(reply, 400)["detail"]
    assert fake.calls == []


def test_json_with_charset_parameter_is_accepted():
    reply = call(
        FakeOrders(),
        "POST",
        "/orders",
        data=json.dumps(VALID),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201


def test_schema_violations_are_unprocessable_with_field_errors():
    fake = FakeOrders()
    body = {"userId": "alice", "items": [{"productId": "p1", "quantity": 0}]}
    problem = assert_problem(post_order(fake, body), 422)
    assert problem["type"] == "/problems/validation"
    assert problem["title"] == "Invalid order"
    assert problem["detail"] == "items[0].quantity must be at least 1"
    assert problem["errors"] == [{"field": "items[0].quantity", "message": "must be at least 1"}]
    assert fake.calls == []


def test_body_over_64_kib_is_too_large():
    fake = FakeOrders()
    raw = json.dumps({"userId": "a" * MAX_BODY_BYTES}).encode()
    problem = assert_problem(post_order(fake, raw), 413)
    assert problem["instance"] == "/orders"
    assert fake.calls == []


def test_listing_without_user_id_is_a_bad_request():
    fake = FakeOrders()
    problem = assert_problem(call(fake, "GET", "/orders"), 400)
    assert problem["errors"] == [{"field": "userId", "message": "is required"}]
    assert fake.calls == []


@pytest.mark.parametrize("user_id", ["", "u" * 65])
def test_listing_with_an_invalid_user_id_is_a_bad_request(user_id):
    fake = FakeOrders()
    assert_problem(call(fake, "GET", "/orders", params={"userId": user_id}), 400)
    assert fake.calls == []


def test_listing_returns_a_json_array():
    fake = FakeOrders()
    reply = call(fake, "GET", "/orders", params={"userId": "alice"})
    assert reply.status == 200
    assert reply.json == []
    assert fake.calls == [("list_orders", "alice")]


def test_a_non_uuid_order_id_is_not_found_without_a_lookup():
    fake = FakeOrders()
    problem = assert_problem(call(fake, "GET", "/orders/not-a-uuid"), 404)
    assert problem["type"] == "/problems/order-not-found"
    assert problem["instance"] == "/orders/not-a-uuid"
    assert fake.calls == []


def test_an_unknown_order_is_not_found():
    fake = FakeOrders()
    order_id = uuid.uuid4()
    assert_problem(call(fake, "GET", f"/orders/{order_id}"), 404)
    assert fake.calls == [("get_order", order_id)]


def test_unknown_routes_and_methods_are_problems():
    assert_problem(call(FakeOrders(), "GET", "/nope"), 404)
    reply = call(FakeOrders(), "DELETE", "/orders")
    assert_problem(reply, 405)
    assert "POST" in reply.headers["Allow"]


def test_the_openapi_document_is_served():
    reply = call(FakeOrders(), "GET", "/openapi.yaml")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/yaml")
    assert reply.body.startswith(b"openapi: 3.1.0")


def test_a_user_cannot_order_or_list_for_another_user():
    fake = FakeOrders()
    reply = call(
        fake, "POST", "/orders", user="bob",
        data=json.dumps(VALID).encode(), headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert reply.status == 403
    assert call(fake, "GET", "/orders?userId=alice", user="bob").status == 403
    assert fake.calls == []
