"""The web service on aiohttp's in-process test server: its page and files with their security
headers, and the BFF with fake upstreams. A test middleware stands in for the auth middleware
(the principal from X-Test-User and X-Test-Roles)."""

import asyncio
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common.auth.middleware import PRINCIPAL
from services.common.auth.principal import Principal
from services.common.errors import NotFound, PermissionDenied, Unavailable
from services.web import api
from services.web.app import http_app, web_url
from services.web.pages import CSP, static_files
from tests.unit.test_web_views import TRACE

PROBLEM = "application/problem+json"
ORDER_ID = str(uuid.uuid4())
ALICE = {"X-Test-User": "alice"}
ADMIN = {"X-Test-User": "root", "X-Test-Roles": "admin"}


@web.middleware
async def principal_from_headers(request, handler):
    user = request.headers.get("X-Test-User")
    if user is not None:
        roles = frozenset(r for r in request.headers.get("X-Test-Roles", "").split(",") if r)
        request[PRINCIPAL] = Principal(user, roles, token=f"token-of-{user}")
    return await handler(request)


class FakeOrders:
    def __init__(self, orders):
        self.orders = orders
        self.tokens = []

    async def order(self, order_id, principal):
        self.tokens.append(principal.token)
        if order_id not in self.orders:
            raise NotFound(f"order {order_id} not found")
        order = self.orders[order_id]
        if order["userId"] != principal.sub and "admin" not in principal.roles:
            raise NotFound(f"order {order_id} not found")  # as orders: it tells nothing more
        return order

    async def close(self):
        pass


class FakePayments:
    def __init__(self, payment=None, down=False):
        self.payment_value, self.down = payment, down

    async def payment(self, payment_id, principal):
        if self.down:
            raise Unavailable("payments unavailable: UNAVAILABLE")
        return self.payment_value

    async def close(self):
        pass


class FakeNotifications:
    async def history(self, user_id, principal):
        return [{"id": "n1", "subject": f"order/{ORDER_ID}", "createdAt": "t", "data": {}}]

    async def close(self):
        pass


class FakeJaeger:
    def __init__(self, traces):
        self.traces = traces

    async def traces_of_order(self, order_id):
        return self.traces

    async def close(self):
        pass


class FakeConsul:
    def __init__(self):
        self.set = {}

    async def health(self):
        return [{"service": "orders", "instance": "orders-1", "status": "passing"}]

    async def faults(self):
        return dict(self.set)

    async def set_fault(self, service, value):
        self.set[service] = value

    async def clear_fault(self, service):
        self.set.pop(service, None)

    async def close(self):
        pass


class FakeUsers:
    def __init__(self):
        self.blocked = []

    async def block(self, user_id, reason, principal):
        if "admin" not in principal.roles:
            raise PermissionDenied("requires the role admin")
        self.blocked.append(user_id)
        return {"id": user_id, "blocked": True}

    async def close(self):
        pass


def order(user="alice", payment_id="p1"):
    return {"id": ORDER_ID, "userId": user, "status": "PAID", "paymentId": payment_id}


async def with_client(
    test, *, orders=None, payments=None, traces=(), consul=None, users=None, jaeger_ui=None
):
    app, bff = http_app()
    bff.middlewares.append(principal_from_headers)
    bff[api.ORDERS] = orders or FakeOrders({ORDER_ID: order()})
    bff[api.PAYMENTS] = payments or FakePayments({"id": "p1", "status": "SUCCEEDED"})
    bff[api.NOTIFICATIONS] = FakeNotifications()
    bff[api.JAEGER] = FakeJaeger(list(traces))
    bff[api.JAEGER_UI] = jaeger_ui
    bff[api.CONSUL] = consul or FakeConsul()
    bff[api.USERS] = users or FakeUsers()
    app.add_subapp("/web/api", bff)
    async with TestClient(TestServer(app)) as client:
        await test(client)


def run(test, **fakes):
    asyncio.run(asyncio.wait_for(with_client(test, **fakes), timeout=20))


def test_the_page_and_callback_are_the_same_html_with_a_strict_csp():
    async def test(client):
        for path in ("/", "/callback"):
            response = await client.get(path)
            assert response.status == 200
            assert response.content_type == "text/html"
            assert '<script type="module" src="/static/js/main.js">' in await response.text()
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in CSP and "unsafe" not in CSP
        assert "frame-ancestors 'none'" in CSP

    run(test)


def test_every_static_file_is_served_with_its_type_and_nothing_else_is():
    async def test(client):
        assert "/static/js/main.js" in static_files()
        for url in static_files():
            response = await client.get(url)
            assert response.status == 200, url
            assert response.headers["Content-Security-Policy"] == CSP
        script = await client.get("/static/js/auth.js")
        assert script.content_type == "text/javascript"
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/js/nope.js", "/x"):
            response = await client.get(path)
            assert response.status == 404, path
            assert response.content_type == PROBLEM

    run(test)


def test_no_script_keeps_a_token_in_storage():
    for url, path in static_files().items():
        if url.endswith(".js"):
            source = path.read_text()
            assert "localStorage" not in source, url
            for line in source.splitlines():
                if "sessionStorage.setItem" in line:
                    assert "FLOW_KEY" in line, f"{url}: only the sign-in round trip is stored"


def test_the_order_view_joins_order_payment_and_notifications_with_the_callers_token():
    orders = FakeOrders({ORDER_ID: order()})

    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}", headers=ALICE)
        assert response.status == 200
        body = await response.json()
        assert body["order"]["id"] == ORDER_ID
        assert body["payment"] == {"id": "p1", "status": "SUCCEEDED"}
        assert [n["id"] for n in body["notifications"]] == ["n1"]
        assert orders.tokens == ["token-of-alice"]

    run(test, orders=orders)


def test_the_order_view_without_payments_still_shows_the_order():
    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}", headers=ALICE)
        assert response.status == 200
        body = await response.json()
        assert body["payment"] is None
        assert body["paymentError"] == "payments unavailable: UNAVAILABLE"
        assert body["order"]["status"] == "PAID"

    run(test, payments=FakePayments(down=True))


def test_the_order_view_refuses_what_orders_refuses():
    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}", headers={"X-Test-User": "bob"})
        assert response.status == 404
        assert response.content_type == PROBLEM
        missing = await client.get(f"/web/api/orders/{uuid.uuid4()}", headers=ALICE)
        assert missing.status == 404
        malformed = await client.get("/web/api/orders/not-a-uuid", headers=ALICE)
        assert malformed.status == 422
        assert (await malformed.json())["errors"][0]["field"] == "id"

    run(test)


def test_the_trace_view_is_the_orders_first_trace_as_a_waterfall():
    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}/trace", headers=ALICE)
        assert response.status == 200
        body = await response.json()
        assert body["traceId"] == TRACE["traceID"]
        assert len(body["spans"]) == len(TRACE["spans"])
        assert body["jaegerUi"] is None, "no link where Jaeger has no UI"
        bob = await client.get(f"/web/api/orders/{ORDER_ID}/trace", headers={"X-Test-User": "bob"})
        assert bob.status == 404, "no trace of an order the caller may not see"

    run(test, traces=[TRACE])


def test_the_trace_view_links_to_the_trace_in_jaegers_ui_where_there_is_one():
    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}/trace", headers=ALICE)
        assert response.status == 200
        body = await response.json()
        assert body["jaegerUi"] == f"http://127.0.0.1:16686/trace/{TRACE['traceID']}"

    run(test, traces=[TRACE], jaeger_ui="http://127.0.0.1:16686/")


def test_the_jaeger_ui_address_is_an_http_url_or_unset():
    assert web_url("X", None) is None
    assert web_url("X", "") is None
    assert web_url("X", "https://jaeger.example:16686") == "https://jaeger.example:16686"
    for bad in ("javascript:alert(1)", "127.0.0.1:16686", "http://"):
        with pytest.raises(ValueError, match="X must be an http"):
            web_url("X", bad)


def test_no_trace_yet_is_a_404_problem():
    async def test(client):
        response = await client.get(f"/web/api/orders/{ORDER_ID}/trace", headers=ALICE)
        assert response.status == 404
        assert response.content_type == PROBLEM

    run(test)


def test_me_says_whether_the_user_is_an_admin():
    async def test(client):
        alice = await (await client.get("/web/api/me", headers=ALICE)).json()
        root = await (await client.get("/web/api/me", headers=ADMIN)).json()
        assert alice == {"sub": "alice", "roles": [], "admin": False}
        assert root["admin"] is True

    run(test)


def test_the_admin_api_refuses_non_admins():
    consul, users = FakeConsul(), FakeUsers()

    async def test(client):
        for method, path, body in (
            ("GET", "/web/api/admin/health", None),
            ("POST", "/web/api/admin/users/bob/block", {}),
            ("PUT", "/web/api/admin/faults/payments", {"errorRate": 1}),
            ("DELETE", "/web/api/admin/faults/payments", None),
        ):
            response = await client.request(method, path, json=body, headers=ALICE)
            assert response.status == 403, path
            assert response.content_type == PROBLEM
        assert consul.set == {} and users.blocked == []

    run(test, consul=consul, users=users)


def test_an_admin_blocks_users_and_sets_and_clears_fault_flags():
    consul, users = FakeConsul(), FakeUsers()

    async def test(client):
        block = await client.post("/web/api/admin/users/bob/block", json={}, headers=ADMIN)
        assert block.status == 200 and users.blocked == ["bob"]
        put = await client.put(
            "/web/api/admin/faults/payments", json={"errorRate": 0.5}, headers=ADMIN
        )
        assert put.status == 200
        health = await (await client.get("/web/api/admin/health", headers=ADMIN)).json()
        assert health["instances"][0]["instance"] == "orders-1"
        assert "payments" in health["faults"]
        bad = await client.put(
            "/web/api/admin/faults/payments", json={"errorRate": 3}, headers=ADMIN
        )
        assert bad.status == 422 and bad.content_type == PROBLEM
        cleared = await client.delete("/web/api/admin/faults/payments", headers=ADMIN)
        assert cleared.status == 204 and consul.set == {}

    run(test, consul=consul, users=users)
