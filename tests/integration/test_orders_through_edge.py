"""The orders REST API, reached through the edge gateway and the mesh."""

from __future__ import annotations

import uuid

import httpx
import pytest

PROBLEM = "application/problem+json"


USER = "alice"  # a seeded user: orders checks every user with the users service


def orders_of(edge: httpx.Client, user: str) -> list[dict]:
    resp = edge.get("/orders", params={"userId": user})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_order_created_through_the_edge_can_be_fetched_and_listed(edge: httpx.Client) -> None:
    user = USER
    body = {
        "userId": user,
        "items": [{"productId": "book", "quantity": 2}, {"productId": "pen", "quantity": 3}],
    }

    created = edge.post("/orders", json=body)

    assert created.status_code == 201, created.text
    order = created.json()
    assert order["userId"] == user
    assert order["status"] == "PAID"
    assert order["totalPrice"] == (2 + 3) * 100
    assert order["items"] == body["items"]
    fetched = edge.get(f"/orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order
    assert orders_of(edge, user)[-1] == order


def test_same_idempotency_key_and_body_returns_the_same_order(edge: httpx.Client) -> None:
    user = USER
    before = len(orders_of(edge, user))
    body = {"userId": user, "items": [{"productId": "book", "quantity": 1}]}
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    first = edge.post("/orders", json=body, headers=headers)
    again = edge.post("/orders", json=body, headers=headers)

    assert first.status_code == 201, first.text
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(orders_of(edge, user)) == before + 1


def test_same_idempotency_key_with_another_body_is_refused(edge: httpx.Client) -> None:
    user = USER
    before = len(orders_of(edge, user))
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = edge.post(
        "/orders",
        headers=headers,
        json={"userId": user, "items": [{"productId": "a", "quantity": 1}]},
    )
    other = edge.post(
        "/orders",
        headers=headers,
        json={"userId": user, "items": [{"productId": "a", "quantity": 2}]},
    )

    assert first.status_code == 201
    assert other.status_code == 422
    assert other.headers["content-type"].startswith(PROBLEM)
    assert len(orders_of(edge, user)) == before + 1


BAD_BODIES = {
    "malformed json": (b'{"userId": "x", "items": [', 400),
    "not an object": (b'["userId"]', 400),
    "missing userId": (b'{"items": [{"productId": "a", "quantity": 1}]}', 422),
    "empty items": (b'{"userId": "%s", "items": []}', 422),
    "zero quantity": (b'{"userId": "%s", "items": [{"productId": "a", "quantity": 0}]}', 422),
    "negative quantity": (b'{"userId": "%s", "items": [{"productId": "a", "quantity": -1}]}', 422),
    "fractional quantity": (
        b'{"userId": "%s", "items": [{"productId": "a", "quantity": 1.5}]}',
        422,
    ),
    "string quantity": (b'{"userId": "%s", "items": [{"productId": "a", "quantity": "2"}]}', 422),
    "boolean quantity": (b'{"userId": "%s", "items": [{"productId": "a", "quantity": true}]}', 422),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_order_input_gets_a_problem_and_stores_nothing(edge: httpx.Client, case: str) -> None:
    user = USER
    before = orders_of(edge, user)
    raw, expected = BAD_BODIES[case]
    body = raw.replace(b"%s", user.encode()) if b"%s" in raw else raw

    resp = edge.post("/orders", content=body, headers={"Content-Type": "application/json"})

    assert resp.status_code == expected, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    problem = resp.json()
    assert problem["status"] == expected
    assert problem["title"] and problem["detail"]
    assert orders_of(edge, user) == before


def test_oversize_body_is_refused_with_413(edge: httpx.Client) -> None:
    user = USER
    before = orders_of(edge, user)
    items = [{"productId": "p" * 60, "quantity": 1}] * 2000
    resp = edge.post("/orders", json={"userId": user, "items": items})

    assert resp.status_code == 413, resp.text[:200]
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert orders_of(edge, user) == before


def test_unknown_order_id_is_404_problem(edge: httpx.Client) -> None:
    for order_id in (str(uuid.uuid4()), "not-a-uuid"):
        resp = edge.get(f"/orders/{order_id}")
        assert resp.status_code == 404, resp.text
        assert resp.headers["content-type"].startswith(PROBLEM)


def test_listing_without_user_id_is_400_problem(edge: httpx.Client) -> None:
    resp = edge.get("/orders")
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith(PROBLEM)


def test_openapi_spec_is_served(edge: httpx.Client) -> None:
    resp = edge.get("/openapi/orders.yaml")
    assert resp.status_code == 200
    assert "openapi: 3.1" in resp.text
