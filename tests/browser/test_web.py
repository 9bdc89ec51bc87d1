"""The web front end in Debian's Chromium against the real mesh: sign in through auth's login
page (OIDC code + PKCE), place orders and watch them turn PAID live, through a payments outage,
their trace, the admin controls only admins get."""

from __future__ import annotations

import re
import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx
from playwright.sync_api import Page, expect

from mesh.runtime import demo
from mesh.runtime.browser import ORDER_TIMEOUT_MS, TRACE_TIMEOUT_MS, place_order, sign_in
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from tests.support import wait_for

# Status changes travel orders' outbox → Kafka → notifications → the WebSocket.
LIVE_TIMEOUT_MS = 30_000
PAYMENT_SERVICES = ("payments", "payments-worker")
# UserBlocked travels users' outbox → Kafka → orders, which cancels the user's unpaid orders.
CANCEL_TIMEOUT_S = 60
# The edge drops a blocked user's exchanges when auth's list of blocks names the user (every 5 s),
# or, when it does not hear of blocks, refreshes them after token_cache.max_age_s (60 s,
# mesh/topology.yaml) per worker and listener, and the refresh is refused.
REFUSAL_TIMEOUT_S = 120


def outside_playwright(call, *args, **kwargs):
    """Run `call` in a thread of its own: Playwright's sync API keeps an event loop running in
    the test's thread, where the runtime's asyncio.run (Kafka's admin client, in the workers'
    readiness check) cannot run."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call, *args, **kwargs).result()


def signed_in(page: Page, mesh: Mesh, edge_url: str, user: str) -> Page:
    sign_in(page, edge_url, user, demo.password(mesh.state, user))
    expect(page.get_by_role("link", name="My orders")).to_be_visible()
    expect(page.locator("#user")).to_have_text(user)
    expect(page.locator("#live-state")).to_have_text(re.compile("live"), timeout=LIVE_TIMEOUT_MS)
    return page


def order_status(page: Page):
    return page.get_by_test_id("order-status")


def edge_http(mesh: Mesh, edge_url: str, token: str) -> httpx.Client:
    """The edge's TLS listener, as the holder of `token`."""
    trust = ssl.create_default_context(cafile=str(edge_certs(mesh.state).ca_cert))
    return httpx.Client(
        base_url=edge_url,
        headers={"Authorization": f"Bearer {token}"},
        verify=trust,
        timeout=10.0,
    )


def orders_page_refused(page: Page) -> bool:
    """Open "My orders" afresh (one GET /orders through the edge): whether the page shows an
    error in its place."""
    page.get_by_role("link", name="Shop").click()
    page.get_by_role("link", name="My orders").click()
    page.locator("#main tbody tr, #main .error").first.wait_for(timeout=ORDER_TIMEOUT_MS)
    return page.locator("#main .error").count() > 0


def test_a_wrong_password_shows_an_error_not_a_stack_trace(mesh, edge_url, new_page):
    page = new_page()
    sign_in(page, edge_url, "bob", "not-" + demo.password(mesh.state, "bob"))
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).not_to_have_text("")
    assert "Traceback" not in page.content()
    assert page.url.startswith(f"{edge_url}/auth/"), "still on auth's login page"
    expect(page.get_by_label("Password")).to_be_visible()


def test_the_token_stays_out_of_storage_and_the_address_bar(mesh, edge_url, new_page):
    page = signed_in(new_page(), mesh, edge_url, "alice")
    assert "code=" not in page.url and "access_token" not in page.url
    stored = page.evaluate(
        "() => JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])"
    )
    assert stored == "[[],[]]", "nothing kept in storage once signed in"
    page.reload()
    expect(page.get_by_role("link", name="My orders")).to_be_visible()  # silently, prompt=none


def test_an_order_turns_paid_on_the_page_without_a_reload(mesh, edge_url, new_page):
    page = signed_in(new_page(), mesh, edge_url, "alice")
    page.evaluate("() => { window.sameDocument = true; }")
    place_order(page, pay_later=True)
    expect(order_status(page)).to_have_text("PAID", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("() => window.sameDocument") is True, "the page was not reloaded"
    page.get_by_role("link", name="My orders").click()
    expect(page.locator("tbody tr[data-order] [data-testid=status]").first).to_have_text("PAID")


def test_with_payments_down_the_order_waits_pending_and_is_paid_after_start(
    mesh, edge_url, new_page
):
    page = signed_in(new_page(), mesh, edge_url, "alice")
    page.evaluate("() => { window.sameDocument = true; }")
    try:
        for name in PAYMENT_SERVICES:
            outside_playwright(mesh.stop, name)
        place_order(page, pay_later=False)
        expect(order_status(page)).to_have_text("PAYMENT_PENDING", timeout=ORDER_TIMEOUT_MS)
        expect(page.get_by_test_id("payment")).to_be_visible()
    finally:
        for name in PAYMENT_SERVICES:
            outside_playwright(mesh.start, name, say=lambda _: None)
    expect(order_status(page)).to_have_text("PAID", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("() => window.sameDocument") is True, "the page was not reloaded"


def test_the_trace_view_shows_the_orders_spans_across_the_services(mesh, edge_url, new_page):
    page = signed_in(new_page(), mesh, edge_url, "alice")
    place_order(page, pay_later=True)
    expect(order_status(page)).to_have_text("PAID", timeout=LIVE_TIMEOUT_MS)
    waterfall = page.locator(".waterfall")
    for service in ("orders", "payments-worker", "notifications"):
        expect(waterfall.locator(f"li[data-service={service}]").first).to_be_visible(
            timeout=TRACE_TIMEOUT_MS
        )
    expect(waterfall.locator("li.kafka").first).to_contain_text("Kafka")


def test_a_non_admin_sees_no_admin_controls_and_the_admin_api_refuses_them(
    mesh, edge_url, new_page, tokens
):
    page = signed_in(new_page(), mesh, edge_url, "bob")
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    page.goto(f"{edge_url}/#/admin")
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()
    expect(page.get_by_text("This page is for admins only.")).to_be_visible()
    expect(page.get_by_role("button", name="Block")).to_have_count(0)
    expect(page.get_by_role("button", name="Set")).to_have_count(0)
    bob = {"Authorization": f"Bearer {tokens.external('bob')}"}
    trust = ssl.create_default_context(cafile=str(edge_certs(mesh.state).ca_cert))
    with httpx.Client(base_url=edge_url, verify=trust, timeout=10.0) as client:
        health = client.get("/web/api/admin/health", headers=bob)
        fault = client.put("/web/api/admin/faults/payments", headers=bob, json={"errorRate": 1})
    for refused in (health, fault):
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_an_admin_sees_the_mesh_health_and_the_fault_controls(mesh, edge_url, new_page):
    page = signed_in(new_page(), mesh, edge_url, "admin")
    page.get_by_role("link", name="Admin").click()
    health = page.locator("#health-title ~ table tbody")
    expect(health.get_by_role("row").filter(has_text="orders-1")).to_contain_text("passing")
    expect(page.get_by_role("button", name="Set")).to_be_visible()
    expect(page.get_by_label("Service")).to_be_visible()


def test_an_admin_blocks_a_user_whose_pending_order_is_cancelled_and_session_refused(
    mesh, edge_url, new_page, launch_browser, fresh_user, tokens
):
    user = fresh_user()
    shopper = signed_in(new_page(), mesh, edge_url, user.id)
    try:
        outside_playwright(mesh.stop, "payments-worker")
        order_id = place_order(shopper, pay_later=True)  # 202: the task waits for a worker
        expect(order_status(shopper)).to_have_text("PAYMENT_PENDING", timeout=ORDER_TIMEOUT_MS)

        admin = signed_in(new_page(launch_browser()), mesh, edge_url, "admin")
        admin.get_by_role("link", name="Admin").click()
        admin.get_by_label("User id").fill(user.id)
        admin.get_by_label("Reason").fill("blocked by the browser test")
        admin.get_by_role("button", name="Block").click()
        block_section = admin.get_by_role("region", name="Block a user")
        expect(block_section.get_by_role("status")).to_have_text(f"{user.id} is blocked.")

        with edge_http(mesh, edge_url, tokens.external("admin")) as as_admin:
            wait_for(
                lambda: as_admin.get(f"/orders/{order_id}").json()["status"] == "CANCELLED",
                timeout=CANCEL_TIMEOUT_S,
                what="the blocked user's pending order to be cancelled",
                interval=0.5,
            )
    finally:
        outside_playwright(mesh.start, "payments-worker", say=lambda _: None)

    with edge_http(mesh, edge_url, user.token) as as_user:

        def refusal() -> httpx.Response | None:
            answer = as_user.get("/orders", params={"userId": user.id})
            return answer if answer.status_code == 403 else None

        refused = wait_for(
            refusal,
            timeout=REFUSAL_TIMEOUT_S,
            what="the edge to refuse the blocked user's token",
            interval=1.0,
        )
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "/problems/user-blocked"

    wait_for(
        lambda: orders_page_refused(shopper),
        timeout=REFUSAL_TIMEOUT_S,
        what="the blocked user's page to show the refusal",
        interval=1.0,
    )
    expect(shopper.locator("#main .error")).to_contain_text("blocked")
    assert "Traceback" not in shopper.content()
