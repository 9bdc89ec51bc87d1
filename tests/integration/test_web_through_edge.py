"""The web service through the edge: its page is public with a strict CSP, its BFF needs a
token and joins the order, its payment and its notifications with the caller's identity."""

from __future__ import annotations

import httpx

from tests.support import wait_for

PROBLEM = "application/problem+json"
USER = "alice"


def place(edge: httpx.Client) -> dict:
    created = edge.post(
        "/orders", json={"userId": USER, "items": [{"productId": "book", "quantity": 1}]}
    )
    assert created.status_code == 201, created.text
    return created.json()


def test_the_page_is_public_with_a_strict_csp(topology) -> None:
    with httpx.Client(base_url=f"http://{topology.bind_host}:{topology.edge.http_port}") as anon:
        for path in ("/", "/callback", "/static/js/main.js"):
            page = anon.get(path)
            assert page.status_code == 200, path
            assert "script-src 'self'" in page.headers["content-security-policy"]
        assert anon.get("/nothing-here").status_code == 404
        refused = anon.get("/web/api/me")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith(PROBLEM)


def test_the_order_view_joins_order_payment_and_notifications(edge_as) -> None:
    alice = edge_as(USER)
    order = place(alice)

    def joined() -> dict | None:
        view = alice.get(f"/web/api/orders/{order['id']}")
        assert view.status_code == 200, view.text
        body = view.json()
        return body if body["notifications"] else None

    body = wait_for(joined, timeout=20.0, what="the order's notifications in the BFF's view")
    assert body["order"] == order
    assert body["payment"]["id"] == order["paymentId"]
    assert body["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert all(n["data"]["orderId"] == order["id"] for n in body["notifications"])
    me = alice.get("/web/api/me").json()
    assert me == {"sub": USER, "roles": me["roles"], "admin": False}


def test_another_users_order_and_its_trace_are_not_found(edge_as) -> None:
    """orders answers 404 for an order that is not the caller's (its existence is not told),
    and the BFF, which reads it with the caller's token, says the same, for its trace too."""
    order = place(edge_as(USER))
    bob = edge_as("bob")
    for path in (f"/web/api/orders/{order['id']}", f"/web/api/orders/{order['id']}/trace"):
        refused = bob.get(path)
        assert refused.status_code == 404, path
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert order["id"] not in refused.text.replace(path, "")
