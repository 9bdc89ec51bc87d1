"""An order and its payment racing each other across orders, payments and the payment workers:
an order that ends unpaid (cancelled, blocked user, refused) leaves its user uncharged or
refunded, an order whose orders process dies before its payment is paid by the queue, and a
payment that payments refuses fails the order instead of waiting in the queue.

The payment workers are held down where a test needs a task, a cancellation or a payment event
to wait; each test starts them again (tests/integration/test_messaging_flow.py's `Workers`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg
import grpc
import httpx

from mesh.runtime.supervisor import Mesh
from shopmesh.payments.v1 import payments_pb2
from shopmesh.users.v1 import users_pb2
from tests.chaos.test_payments_faults import direct_payment_fails_with
from tests.integration.test_messaging_flow import (
    ITEMS,
    WORKERS,
    Workers,
    assert_charged_once,
    events_for,
    order_statuses,
    orders_client,
    place,
    query,
)
from tests.integration.test_messaging_flow import workers as workers
from tests.support import wait_for

# Long enough for the restarted workers to rejoin their groups and catch up.
SETTLE_S = 120
UNCHARGED = ("CANCELLED", "REFUNDED")
REFUNDED = "shopmesh.payment.refunded.v1"


@contextmanager
def workers_down(mesh: Mesh, workers: Workers) -> Iterator[None]:
    """Both payment workers SIGKILLed and kept down (no watchdog restart) for the block."""
    for name in WORKERS:
        if workers.managed:
            mesh.kill(name, hold=True)
        else:
            workers.kill(name)
    try:
        yield
    finally:
        for name in WORKERS:
            workers.start(name)


def payment_status(mesh: Mesh, order_id: str) -> str | None:
    rows = query(mesh, "payments", "SELECT status FROM payments WHERE order_id = $1", order_id)
    return rows[0]["status"] if rows else None


def wait_for_payment(mesh: Mesh, order_id: str, statuses: tuple[str, ...]) -> str:
    return wait_for(
        lambda: status if (status := payment_status(mesh, order_id)) in statuses else None,
        timeout=SETTLE_S,
        what=f"the payment of order {order_id} to be one of {statuses}",
        interval=0.5,
    )


def order_status(mesh: Mesh, order_id: str) -> str | None:
    return order_statuses(mesh, [order_id]).get(order_id)


def cancel(client: httpx.Client, order_id: str) -> None:
    resp = client.post(f"/orders/{order_id}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED"


def test_a_queued_order_cancelled_before_the_workers_reach_it_leaves_its_user_uncharged(
    mesh: Mesh, tokens, workers
) -> None:
    with workers_down(mesh, workers), orders_client(mesh, tokens, "bob") as client:
        order = place(client, "bob", respond_async=True)
        cancel(client, order["id"])
    # Back up, the workers' task group and cancellation group race for the order: either the
    # cancellation holds its id first (CANCELLED, never charged) or the task charges first and
    # the cancellation refunds it (REFUNDED). Before the fix it stayed SUCCEEDED.
    status = wait_for_payment(mesh, order["id"], UNCHARGED)
    assert order_status(mesh, order["id"]) == "CANCELLED"
    refunds = events_for(mesh, "payments", order["id"], REFUNDED)
    assert len(refunds) == (1 if status == "REFUNDED" else 0)


def test_a_charge_that_lands_after_the_cancel_is_refunded(
    mesh: Mesh, tokens, workers, payments_grpc
) -> None:
    with workers_down(mesh, workers), orders_client(mesh, tokens, "bob") as client:
        order = place(client, "bob", respond_async=True)
        cancel(client, order["id"])
        # The order's synchronous ProcessPayment reaching payments after the cancel committed.
        late = payments_grpc.ProcessPayment(
            payments_pb2.ProcessPaymentRequest(
                order_id=order["id"], user_id="bob", amount=order["totalPrice"], currency="RUB"
            ),
            timeout=10,
        )
        assert late.status == payments_pb2.PAYMENT_STATUS_SUCCEEDED
    wait_for_payment(mesh, order["id"], ("REFUNDED",))
    assert order_status(mesh, order["id"]) == "CANCELLED"
    assert len(events_for(mesh, "payments", order["id"], REFUNDED)) == 1


def test_a_blocked_users_queued_order_is_cancelled_and_leaves_them_uncharged(
    mesh: Mesh, tokens, workers, users_grpc
) -> None:
    user = users_grpc.CreateUser(
        users_pb2.CreateUserRequest(name="Mel", email=f"mel-{uuid.uuid4().hex[:8]}@example.org")
    )
    with workers_down(mesh, workers), orders_client(mesh, tokens, "admin") as admin:
        order = place(admin, user.id, respond_async=True)
        users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user.id, reason="fraud"))
        wait_for(
            lambda: order_status(mesh, order["id"]) == "CANCELLED",
            timeout=60,
            what="orders to cancel the blocked user's queued order",
            interval=0.3,
        )
    # Whether payments had read the block or not when the task came up, nothing stays charged.
    wait_for_payment(mesh, order["id"], UNCHARGED)
    assert order_status(mesh, order["id"]) == "CANCELLED"


def held_up(payments_grpc) -> bool:
    """A direct ProcessPayment runs past a 1 s deadline: the latency fault holds calls up."""
    return direct_payment_fails_with(
        payments_grpc, grpc.StatusCode.DEADLINE_EXCEEDED, timeout_s=1.0
    )


# Orders answers PAYMENT_PENDING 2.5 s after storing an order whose payment hangs; on a busy
# machine seeing the order stored and killing its instance can take longer: then the scenario
# did not happen, and is set up again with a new order.
KILL_ATTEMPTS = 5


def place_with_key(mesh: Mesh, tokens, key: str) -> httpx.Response:
    with orders_client(mesh, tokens, "bob") as client:
        body = {"userId": "bob", "items": ITEMS}
        return client.post("/orders", json=body, headers={"Idempotency-Key": key})


def place_and_kill_mid_payment(
    mesh: Mesh, tokens, key: str, victim: str
) -> tuple[asyncpg.Record, bool]:
    """Place an order on `victim` and SIGKILL it once the order is stored: the stored row, and
    whether the request died with it (else orders had answered first)."""
    with ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(place_with_key, mesh, tokens, key)
        (stored,) = wait_for(
            lambda: query(mesh, "orders", "SELECT order_id FROM idempotency_keys WHERE key = $1",
                          key),
            timeout=10,
            what="the order to be stored",
            interval=0.05,
        )  # fmt: skip
        assert mesh.kill(victim, hold=True) == [victim]
        try:
            doomed.result(timeout=30)
        except httpx.HTTPError:
            return stored, True
        finally:
            mesh.start(victim, say=lambda _: None)
    return stored, False


def test_an_order_whose_orders_process_dies_during_its_payment_is_paid_by_a_worker(
    mesh: Mesh, tokens, workers, fault, payments_grpc
) -> None:
    # ProcessPayment answers nothing for 5 s (then UNAVAILABLE): orders is killed while it waits.
    fault("payments", error_rate=1.0, latency_ms=5000, methods=["ProcessPayment"])
    wait_for(lambda: held_up(payments_grpc), timeout=30,
             what="the payments fault to hold ProcessPayment up")  # fmt: skip
    victim = mesh.topology.service("orders").instances[0].id  # orders_client's instance
    for _attempt in range(KILL_ATTEMPTS):
        key = f"races-{uuid.uuid4().hex}"
        stored, died_mid_payment = place_and_kill_mid_payment(mesh, tokens, key, victim)
        if died_mid_payment:
            break
    assert died_mid_payment, f"orders answered before {victim} was killed, {KILL_ATTEMPTS} times"
    # Stored PENDING with its task held back; the synchronous attempt never answered (and could
    # not charge: the fault fails it), so nothing withdrew the task: it goes out when its hold
    # runs out. Before the fix nothing paid or queued it: PENDING for good.
    order_id = str(stored["order_id"])
    wait_for(
        lambda: order_status(mesh, order_id) == "PAID",
        timeout=SETTLE_S,
        what=f"order {order_id} to be paid by its queued task",
        interval=0.5,
    )
    replayed = wait_for(lambda: place_with_key(mesh, tokens, key), timeout=30,
                        what="orders to answer again")  # fmt: skip
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert (replayed.json()["id"], replayed.json()["status"]) == (order_id, "PAID")
    assert_charged_once(mesh, [order_id])


def test_a_payment_payments_refuses_fails_the_order_and_its_stray_payment_is_refunded(
    mesh: Mesh, tokens, workers, payments_grpc
) -> None:
    with workers_down(mesh, workers), orders_client(mesh, tokens, "bob") as client:
        order = place(client, "bob", respond_async=True)
        # Somebody pays the order's id for 1 kopeck: the order's own payment now conflicts.
        stray = payments_grpc.ProcessPayment(
            payments_pb2.ProcessPaymentRequest(
                order_id=order["id"], user_id="bob", amount=1, currency="RUB"
            ),
            timeout=10,
        )
        assert stray.status == payments_pb2.PAYMENT_STATUS_SUCCEEDED
    # The worker's task is refused (not retried, not dead-lettered), the order fails with the
    # reason, and the payment that does not pay for it is given back.
    wait_for(
        lambda: order_status(mesh, order["id"]) == "FAILED",
        timeout=SETTLE_S,
        what=f"order {order['id']} to fail on the refused payment",
        interval=0.5,
    )
    (row,) = query(mesh, "orders", "SELECT status_reason FROM orders WHERE id = $1",
                   uuid.UUID(order["id"]))  # fmt: skip
    assert row["status_reason"] == (
        f"payment refused: order {order['id']} already has a payment with a different amount"
    )
    assert events_for(mesh, "payments", order["id"], "shopmesh.payment.refused.v1")
    wait_for_payment(mesh, order["id"], ("REFUNDED",))
