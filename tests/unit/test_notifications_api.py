"""HTTP and WebSocket entrypoints on aiohttp's in-process test server, with a fake repository.

Events arrive the way the `notifications` consumer hands them over: a Kafka message value parsed
by the consumer's envelope check, then `NotificationService.on_event`. A tiny test middleware
stands in for the auth middleware: it sets request["principal"] from the X-Test-User and
X-Test-Roles headers.
"""

import asyncio
import contextlib
import json
import socket
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from services.common.auth.middleware import PRINCIPAL
from services.common.auth.principal import Principal
from services.common.messaging.envelope import parse
from services.notifications import api
from services.notifications.app import http_app
from services.notifications.domain import InvalidEventError, UnknownCursorError
from services.notifications.hub import Hub
from services.notifications.live import LiveFeed
from services.notifications.service import Delivery, NotificationService
from tests.support import wait_until

PROBLEM = "application/problem+json"
ALICE = {"X-Test-User": "alice"}
BOB = {"X-Test-User": "bob"}
ADMIN = {"X-Test-User": "root", "X-Test-Roles": "admin,support"}
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@web.middleware
async def principal_from_headers(request, handler):
    user = request.headers.get("X-Test-User")
    if user is not None:
        roles = frozenset(r for r in request.headers.get("X-Test-Roles", "").split(",") if r)
        request[PRINCIPAL] = Principal(user, roles)
    return await handler(request)


class FakeRepository:
    """Announces each stored notification to the feed of every instance in `listening` whose
    listener listens, as NOTIFY does."""

    def __init__(self):
        self.rows = {}
        self.listening = []
        self.reads = 0

    async def add(self, notification):
        if notification.id in self.rows:
            return False
        self.rows[notification.id] = notification
        payload = json.dumps({"user_id": notification.user_id, "id": str(notification.id)})
        for listener, feed in self.listening:
            if listener.listening:
                feed.announce(payload)
        return True

    async def get(self, notification_id):
        self.reads += 1
        return self.rows.get(notification_id)

    async def list_for_user(self, user_id, *, limit, after):
        mine = sorted(
            (n for n in self.rows.values() if n.user_id == user_id),
            key=lambda n: (n.created_at, n.id),
            reverse=True,
        )
        if after is not None:
            cursor = next((n for n in mine if n.id == after), None)
            if cursor is None:
                raise UnknownCursorError(after)
            mine = [n for n in mine if (n.created_at, n.id) < (cursor.created_at, cursor.id)]
        return mine[:limit]


class FakeListener:
    def __init__(self):
        self.listening = False
        self.listens = 0

    async def ensure(self):
        self.listening = True
        self.listens += 1
        return True

    async def close(self):
        self.listening = False


class Clock:
    """One second later on every call, so history order is the delivery order."""

    def __init__(self):
        self.now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

    def __call__(self):
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Harness:
    client: TestClient
    hub: Hub
    repository: FakeRepository
    service: NotificationService
    listener: FakeListener

    async def deliver(self, event):
        """As the consumer does with a message: parse its value, call the group's handler (the
        notifications handler does not use the connection, so there is none)."""
        return await self.service.on_event(None, parse(json.dumps(event).encode()))

    async def history(self, headers, **params):
        resp = await self.client.get("/notifications", headers=headers, params=params)
        return resp.status, await resp.json(content_type=None), resp.headers["Content-Type"]

    async def connect(self, headers):
        ws = await self.client.ws_connect("/notifications/ws", headers=headers)
        assert await ws.receive_json(timeout=2) == {
            "type": "hello",
            "userId": headers["X-Test-User"],
        }
        return ws


def build_app(hub, service):
    app = http_app(hub)
    app.middlewares.append(principal_from_headers)
    app[api.SERVICE] = service
    return app


def new_service(repository=None):
    return NotificationService(repository or FakeRepository(), clock=Clock())


@contextlib.asynccontextmanager
async def serving(hub=None, repository=None, clock=None):
    """One instance of the service: its hub, its live feed on the shared `repository`."""
    hub = hub or Hub()
    repository = repository or FakeRepository()
    service = NotificationService(repository, clock=clock or Clock())
    feed = LiveFeed(repository, hub)
    listener = FakeListener()
    repository.listening.append((listener, feed))
    async with (
        feed.running(listener),
        TestClient(TestServer(build_app(hub, service))) as client,
    ):
        yield Harness(client, hub, repository, service, listener)


def run(test):
    asyncio.run(asyncio.wait_for(test(), timeout=20))


def event(user="alice", event_id=None, **data):
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "shopmesh/orders",
        "type": "shopmesh.order.status_changed.v1",
        "subject": "order/o-1",
        "data": {"orderId": "o-1", "userId": user, "status": "PAID", **data},
    }


async def nothing_arrives(ws, within=0.2):
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=within)
    return True


def test_an_event_reaches_every_socket_of_its_user_and_no_one_else():
    async def go():
        async with serving() as h:
            tab1, tab2, bobs = await h.connect(ALICE), await h.connect(ALICE), await h.connect(BOB)
            sent = event(statusReason="paid by card")
            delivery = await h.deliver(sent)
            assert delivery == Delivery(uuid.UUID(sent["id"]), duplicate=False)
            expected = {
                "id": sent["id"],
                "type": "shopmesh.order.status_changed.v1",
                "subject": "order/o-1",
                "userId": "alice",
                "data": sent["data"],
                "createdAt": "2026-11-29T10:00:01.000Z",
            }
            assert await tab1.receive_json(timeout=2) == expected
            assert await tab2.receive_json(timeout=2) == expected
            assert await nothing_arrives(bobs)

    run(go)


def test_the_same_event_twice_is_stored_and_delivered_once():
    async def go():
        async with serving() as h:
            ws = await h.connect(ALICE)
            first, second = event(), event()
            assert (await h.deliver(first)).duplicate is False
            again = await h.deliver(first)
            assert again == Delivery(uuid.UUID(first["id"]), duplicate=True)
            await h.deliver(second)
            assert (await ws.receive_json(timeout=2))["id"] == first["id"]
            assert (await ws.receive_json(timeout=2))["id"] == second["id"]
            assert len(h.repository.rows) == 2

    run(go)


def test_a_full_queue_closes_only_that_socket_with_1013_while_the_others_keep_receiving():
    class StalledSocket:
        """A client that stopped reading: a send completes only once the socket is closed."""

        closed_with = None
        close_code = None

        def __init__(self):
            self.reading = asyncio.Event()

        async def send_str(self, data):
            await self.reading.wait()

        async def close(self, *, code, message):
            self.closed_with = code
            self.reading.set()
            return True

    async def go():
        async with serving(Hub(queue_size=2)) as h:
            live = await h.connect(ALICE)
            stalled = StalledSocket()
            stuck = h.hub.connect("alice", stalled, None)
            events = [event() for _ in range(5)]
            for sent in events:
                await h.deliver(sent)
                assert (await live.receive_json(timeout=2))["id"] == sent["id"]
            assert stalled.closed_with == WSCloseCode.TRY_AGAIN_LATER
            assert h.hub.connections_of("alice") != () and stuck not in h.hub.connections_of(
                "alice"
            )
            await h.hub.disconnect(stuck)

    run(go)


def test_a_real_client_sees_the_1013_close_and_other_users_are_unaffected():
    async def go():
        async with serving(Hub(queue_size=2)) as h:
            alice, bob = await h.connect(ALICE), await h.connect(BOB)
            for n in range(3):
                h.hub.publish("alice", {"n": n})
            closing = await alice.receive(timeout=2)
            while closing.type == WSMsgType.TEXT:
                assert json.loads(closing.data)["n"] < 2
                closing = await alice.receive(timeout=2)
            assert closing.type == WSMsgType.CLOSE
            assert closing.data == WSCloseCode.TRY_AGAIN_LATER
            assert "reconnect" in closing.extra
            await h.deliver(event(user="bob"))
            assert (await bob.receive_json(timeout=2))["userId"] == "bob"
            again = await h.connect(ALICE)
            await again.close()

    run(go)


async def stalled_client(port, user):
    """A raw WebSocket client that completes the handshake and then stops reading: a tiny
    receive buffer and stream limit make the server's sends block on a real TCP backlog."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    headers = {**UPGRADE, "Host": "test", "X-Test-User": user}
    request = "GET /notifications/ws HTTP/1.1\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(request.encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_frames_until_close(reader):
    """(text messages, close code) of the server's frames up to its close frame."""
    texts = []
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x8:
            return texts, struct.unpack(">H", payload[:2])[0]
        texts.append(json.loads(payload))


def test_a_client_that_stops_reading_gets_1013_after_its_backlog_and_others_keep_up():
    async def go():
        hub = Hub(queue_size=4)
        server = TestServer(build_app(hub, new_service()))
        await server.start_server()
        async with aiohttp.ClientSession() as session:
            live = await session.ws_connect(server.make_url("/notifications/ws"), headers=ALICE)
            assert (await live.receive_json(timeout=2))["type"] == "hello"
            reader, writer = await stalled_client(server.port, "alice")
            sent = 0
            while hub.slow_consumer_closes == 0:
                assert sent < 2000, "the stalled client never filled its queue"
                hub.publish("alice", {"n": sent, "pad": "x" * 32_000})
                assert (await live.receive_json(timeout=2))["n"] == sent
                sent += 1
            texts, code = await asyncio.wait_for(read_frames_until_close(reader), 10)
            assert code == WSCloseCode.TRY_AGAIN_LATER
            assert [t["type"] for t in texts[:1]] == ["hello"]
            assert [t["n"] for t in texts[1:]] == list(range(len(texts) - 1))
            assert len(texts) - 1 < sent
            assert await reader.read() == b""
            writer.close()
            hub.publish("alice", {"n": sent})
            assert (await live.receive_json(timeout=2))["n"] == sent
            assert hub.connection_count == 1
            await live.close()
        await server.close()
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("notif")] == []

    run(go)


def test_unauthenticated_upgrade_is_refused_with_401_before_upgrading():
    async def go():
        async with serving() as h:
            resp = await h.client.get("/notifications/ws", headers=UPGRADE)
            assert resp.status == 401
            assert resp.headers["Content-Type"] == PROBLEM
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert (await resp.json(content_type=None))["type"] == "/problems/unauthenticated"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await h.client.ws_connect("/notifications/ws")
            assert refused.value.status == 401
            assert h.hub.connection_count == 0

    run(go)


def test_a_plain_get_of_the_socket_endpoint_asks_for_an_upgrade():
    async def go():
        async with serving() as h:
            resp = await h.client.get("/notifications/ws", headers=ALICE)
            assert resp.status == 426
            assert resp.headers["Content-Type"] == PROBLEM

    run(go)


def test_a_closed_socket_leaves_no_connection_or_task_behind():
    async def go():
        async with serving() as h:
            ws = await h.connect(ALICE)
            (connection,) = h.hub.connections_of("alice")
            await ws.close()
            await wait_until(lambda: h.hub.connection_count == 0, timeout=1,
                             what="the hub to drop the closed socket")  # fmt: skip
            assert connection.close_code == WSCloseCode.OK
            assert [t for t in asyncio.all_tasks() if t.get_name().startswith("notif")] == []

    run(go)


def test_shutdown_closes_sockets_with_1001():
    async def go():
        hub = Hub()
        server = TestServer(build_app(hub, new_service()))
        await server.start_server()
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(server.make_url("/notifications/ws"), headers=ALICE)
            assert (await ws.receive_json(timeout=2))["type"] == "hello"
            stopping = asyncio.create_task(server.close())
            closing = await ws.receive(timeout=5)
            assert closing.type == WSMsgType.CLOSE
            assert closing.data == WSCloseCode.GOING_AWAY
            await ws.close()
            await stopping
        assert hub.connection_count == 0

    run(go)


def test_history_is_the_users_own_newest_first():
    async def go():
        async with serving() as h:
            ids = [event()["id"] for _ in range(3)]
            for event_id in ids:
                await h.deliver(event(event_id=event_id))
            await h.deliver(event(user="bob"))
            status, body, content_type = await h.history(ALICE)
            assert (status, content_type) == (200, "application/json; charset=utf-8")
            assert [n["id"] for n in body] == ids[::-1]
            assert {n["userId"] for n in body} == {"alice"}
            status, body, _ = await h.history(ALICE, userId="alice")
            assert status == 200 and len(body) == 3

    run(go)


def test_history_pages_with_limit_and_after():
    async def go():
        async with serving() as h:
            ids = [event()["id"] for _ in range(5)]
            for event_id in ids:
                await h.deliver(event(event_id=event_id))
            _, page1, _ = await h.history(ALICE, limit="2")
            _, page2, _ = await h.history(ALICE, limit="2", after=page1[-1]["id"])
            _, page3, _ = await h.history(ALICE, limit="2", after=page2[-1]["id"])
            assert [n["id"] for n in page1 + page2 + page3] == ids[::-1]

    run(go)


def test_admins_may_read_another_users_history():
    async def go():
        async with serving() as h:
            await h.deliver(event(user="bob"))
            status, body, _ = await h.history(ADMIN, userId="bob")
            assert status == 200
            assert [n["userId"] for n in body] == ["bob"]

    run(go)


def test_others_get_403_for_another_users_history():
    async def go():
        async with serving() as h:
            await h.deliver(event(user="bob"))
            status, body, content_type = await h.history(ALICE, userId="bob")
            assert (status, content_type) == (403, PROBLEM)
            assert body["type"] == "/problems/forbidden"
            support = {"X-Test-User": "sam", "X-Test-Roles": "support"}
            assert (await h.history(support, userId="bob"))[0] == 403

    run(go)


def test_history_without_a_user_is_401():
    async def go():
        async with serving() as h:
            status, body, content_type = await h.history({})
            assert (status, content_type) == (401, PROBLEM)
            assert body["type"] == "/problems/unauthenticated"

    run(go)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"after": "42"}, "after"),
        ({"after": str(uuid.uuid4())}, "after"),
        ({"userId": ""}, "userId"),
    ],
)
def test_bad_history_parameters_are_400_naming_the_parameter(params, field):
    async def go():
        async with serving() as h:
            status, body, content_type = await h.history(ADMIN, **params)
            assert (status, content_type) == (400, PROBLEM)
            assert [e["field"] for e in body["errors"]] == [field]

    run(go)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"id": "not-a-uuid"}, "id"),
        ({"source": None}, "source"),
        ({"type": ""}, "type"),
        ({"data": {"orderId": "o-1"}}, "data.userId"),
    ],
)
def test_an_invalid_cloudevent_raises_with_field_errors_and_nothing_is_stored(changes, field):
    async def go():
        async with serving() as h:
            ws = await h.connect(ALICE)
            with pytest.raises(InvalidEventError) as refused:
                await h.service.deliver({**event(), **changes})
            assert [e["field"] for e in refused.value.errors] == [field]
            assert h.repository.rows == {}
            assert await nothing_arrives(ws)

    run(go)


def test_a_well_formed_message_without_a_user_fails_in_the_consumer_handler():
    async def go():
        async with serving() as h:
            ws = await h.connect(ALICE)
            with pytest.raises(InvalidEventError) as refused:
                await h.deliver({**event(), "data": {"orderId": "o-1", "status": "PAID"}})
            assert refused.value.errors == [{"field": "data.userId", "message": "is required"}]
            assert h.repository.rows == {}
            assert await nothing_arrives(ws)

    run(go)


def test_an_event_stored_by_one_instance_reaches_its_users_sockets_on_every_instance():
    """Two instances on one database: whichever consumes the event, alice's socket on the
    other gets it, once, and bob's announcement reads nothing where bob is not connected."""

    async def go():
        repository, clock = FakeRepository(), Clock()
        async with (
            serving(repository=repository, clock=clock) as one,
            serving(repository=repository, clock=clock) as two,
        ):
            on_one, on_two = await one.connect(ALICE), await two.connect(ALICE)
            first, second = event(), event()
            await two.deliver(first)
            await one.deliver(second)
            await two.deliver(first)
            for ws in (on_one, on_two):
                assert [(await ws.receive_json(timeout=2))["id"] for _ in range(2)] == [
                    first["id"],
                    second["id"],
                ]
                assert await nothing_arrives(ws)
            reads = repository.reads
            await one.deliver(event(user="bob"))
            assert await nothing_arrives(on_one)
            assert repository.reads == reads

    run(go)


def test_a_lost_listen_connection_sends_the_instances_clients_back_to_the_history():
    async def go():
        async with serving() as h:
            ws = await h.connect(ALICE)
            missed = event()
            h.listener.listening = False  # Postgres restarted: announcements are lost
            await h.service.on_event(None, parse(json.dumps(missed).encode()))
            closing = await ws.receive(timeout=5)
            assert closing.type == WSMsgType.CLOSE
            assert closing.data == WSCloseCode.SERVICE_RESTART
            assert "GET /notifications" in closing.extra
            await wait_until(lambda: h.listener.listening, timeout=5, what="LISTEN again")
            status, page, _ = await h.history(ALICE)
            assert status == 200
            assert [n["id"] for n in page] == [missed["id"]]
            again = await h.connect(ALICE)
            later = event()
            await h.deliver(later)
            assert (await again.receive_json(timeout=2))["id"] == later["id"]

    run(go)
