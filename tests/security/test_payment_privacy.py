"""A user paying another user's order through the edge (POST /payments, transcoded to
ProcessPayment) is answered word for word as for an order that does not exist, and charges
nothing; the owner is still answered their own order's payment."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.support import FreshClient, wait_for

ORDER = {"items": [{"productId": "book", "quantity": 1}]}


def test_paying_another_users_order_answers_as_for_an_order_that_does_not_exist(
    edge_as_fresh: Callable[[], FreshClient],
) -> None:
    owner, other = edge_as_fresh(), edge_as_fresh()
    placed = owner.http.post("/orders", json={"userId": owner.user_id, **ORDER})
    assert placed.status_code == 201, placed.text
    order = placed.json()

    def owners_payments() -> list[dict]:
        mine = owner.http.get("/payments", params={"userId": owner.user_id})
        assert mine.status_code == 200, mine.text
        payments: list[dict] = mine.json()["payments"]
        return payments

    # Paid at once normally; on a busy machine perhaps by its queued task a little later.
    (payment,) = wait_for(owners_payments, timeout=60, what="the order's payment", interval=0.5)
    assert payment["orderId"] == order["id"]

    def pay(client: FreshClient, order_id: str) -> tuple[int, str, str]:
        # The order's own amount and currency: only the user differs.
        body = {"orderId": order_id, "userId": client.user_id,
                "currency": payment["currency"], "amount": payment["amount"]}  # fmt: skip
        resp = client.http.post("/payments", json=body)
        # The answer with the order id taken out: everything else must be the same.
        return resp.status_code, resp.headers["content-type"], resp.text.replace(order_id, "<id>")

    someone_elses = pay(other, order["id"])
    nobodys = pay(other, str(uuid.uuid4()))
    assert someone_elses == nobodys
    assert someone_elses[0] == 404, someone_elses

    listed = other.http.get("/payments", params={"userId": other.user_id})
    assert listed.status_code == 200, listed.text
    assert listed.json()["payments"] == [], "nothing was charged to the other user"

    # The owner may still ask for their own order's payment (and is answered it, not charged).
    again = owner.http.post(
        "/payments",
        json={"orderId": order["id"], "userId": owner.user_id, "currency": payment["currency"],
              "amount": payment["amount"]},
    )  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["id"] == payment["id"]
