"""Placing an order across the mesh: orders -> users and payments over gRPC through sidecars."""

from __future__ import annotations

import uuid

import grpc
import httpx

from shopmesh.payments.v1 import payments_pb2
from shopmesh.users.v1 import users_pb2


def place(edge: httpx.Client, user: str = "alice", quantity: int = 1) -> dict:
    resp = edge.post(
        "/orders", json={"userId": user, "items": [{"productId": "book", "quantity": quantity}]}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_an_order_is_paid_and_exactly_one_payment_exists(edge: httpx.Client, payments_db) -> None:
    order = place(edge, quantity=3)

    assert order["status"] == "PAID", order
    assert order["paymentId"]
    rows = payments_db("SELECT id, amount, status FROM payments WHERE order_id = $1", order["id"])
    assert len(rows) == 1
    assert str(rows[0]["id"]) == order["paymentId"]
    assert rows[0]["amount"] == 300
    assert rows[0]["status"] == "SUCCEEDED"
    assert edge.get(f"/orders/{order['id']}").json()["status"] == "PAID"


BIG_ITEMS = [{"productId": f"p{i}", "quantity": 1000} for i in range(11)]


def test_a_declined_payment_fails_the_order_with_the_reason(edge: httpx.Client) -> None:
    resp = edge.post(
        "/orders",
        # 11 000 units x 100 = 1 100 000 minor units: above the provider's single-payment limit
        json={"userId": "alice", "items": BIG_ITEMS},
    )
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert order["status"] == "FAILED"
    assert "limit" in order["statusReason"]


def test_an_unknown_user_cannot_order(edge_as) -> None:
    resp = edge_as("admin").post(
        "/orders",
        json={
            "userId": f"ghost-{uuid.uuid4().hex[:6]}",
            "items": [{"productId": "book", "quantity": 1}],
        },
    )
    assert resp.status_code == 422
    assert resp.json()["type"] == "/problems/unknown-user"


def test_a_blocked_user_cannot_order(edge_as, users_grpc) -> None:
    user = users_grpc.CreateUser(
        users_pb2.CreateUserRequest(name="Mallory", email=f"m-{uuid.uuid4().hex[:8]}@example.org")
    )
    users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user.id, reason="fraud"))

    admin = edge_as("admin")  # the only one who may order on another user's behalf
    resp = admin.post(
        "/orders", json={"userId": user.id, "items": [{"productId": "a", "quantity": 1}]}
    )

    assert resp.status_code == 403
    assert resp.json()["type"] == "/problems/user-blocked"
    assert admin.get("/orders", params={"userId": user.id}).json() == []


def test_a_paid_order_cannot_be_cancelled(edge: httpx.Client) -> None:
    order = place(edge)
    resp = edge.post(f"/orders/{order['id']}/cancel")
    assert resp.status_code == 409
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_concurrent_and_repeated_process_payment_for_one_order_create_one_payment(
    payments_grpc, payments_db
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    order_id = str(uuid.uuid4())
    request = payments_pb2.ProcessPaymentRequest(
        order_id=order_id, user_id="alice", amount=500, currency="RUB"
    )
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(
            pool.map(lambda _: payments_grpc.ProcessPayment(request, timeout=10), range(20))
        )
    again = payments_grpc.ProcessPayment(request, timeout=10)

    assert {p.id for p in results} == {again.id}
    assert {p.status for p in results} == {payments_pb2.PAYMENT_STATUS_SUCCEEDED}
    assert len(payments_db("SELECT 1 FROM payments WHERE order_id = $1", order_id)) == 1


def test_a_repeated_payment_with_another_amount_is_refused(payments_grpc) -> None:
    order_id = str(uuid.uuid4())
    payments_grpc.ProcessPayment(
        payments_pb2.ProcessPaymentRequest(
            order_id=order_id, user_id="alice", amount=100, currency="RUB"
        ),
        timeout=10,
    )
    try:
        payments_grpc.ProcessPayment(
            payments_pb2.ProcessPaymentRequest(
                order_id=order_id, user_id="alice", amount=999, currency="RUB"
            ),
            timeout=10,
        )
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    else:
        raise AssertionError("a second charge with another amount was accepted")


def test_watch_payment_streams_pending_then_succeeded(payments_grpc) -> None:
    from concurrent.futures import ThreadPoolExecutor

    order_id = str(uuid.uuid4())
    stream = payments_grpc.WatchPayment(
        payments_pb2.WatchPaymentRequest(order_id=order_id), timeout=15
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        seen = pool.submit(lambda: [u.payment.status for u in stream])
        payments_grpc.ProcessPayment(
            payments_pb2.ProcessPaymentRequest(
                order_id=order_id, user_id="alice", amount=700, currency="RUB"
            ),
            timeout=10,
        )
        statuses = seen.result(timeout=15)

    assert statuses == [payments_pb2.PAYMENT_STATUS_PENDING, payments_pb2.PAYMENT_STATUS_SUCCEEDED]
