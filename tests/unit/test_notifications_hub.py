"""The hub with stand-in sockets: fan-out, backpressure, shutdown, and no leaked tasks."""

import asyncio
import json

from aiohttp import WSCloseCode

from services.notifications.hub import SLOW_CONSUMER_REASON, Hub


class FakeSocket:
    """Records what the hub sends. A stalled socket's sends wait until it is closed, like a
    client that stopped reading and reads again once the close frame is queued behind its
    backlog; a stubborn one never reads again, so its close never completes either."""

    close_code = None

    def __init__(self, *, stalled=False, stubborn=False):
        self.sent = []
        self.closed_with = None
        self._stalled = stalled
        self._stubborn = stubborn
        self._reading = asyncio.Event()

    async def send_str(self, data):
        if self._stalled:
            await self._reading.wait()
        self.sent.append(json.loads(data))

    async def close(self, *, code, message):
        self.closed_with = (code, message.decode())
        if self._stubborn:
            await asyncio.Event().wait()
        self._reading.set()
        return True

    @property
    def notifications(self):
        return [m for m in self.sent if m.get("type") != "hello"]


class FakeTransport:
    aborted = False

    def abort(self):
        self.aborted = True


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def hub_tasks():
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("notifications-") and not task.done()
    ]


def test_every_connection_of_the_user_gets_the_message_and_no_one_else():
    async def go():
        hub = Hub()
        tab1, tab2, other = FakeSocket(), FakeSocket(), FakeSocket()
        connections = [
            hub.connect("alice", tab1, None),
            hub.connect("alice", tab2, None),
            hub.connect("bob", other, None),
        ]
        assert hub.publish("alice", {"id": "n1"}) == 2
        await settle()
        assert tab1.sent == tab2.sent == [{"type": "hello", "userId": "alice"}, {"id": "n1"}]
        assert other.sent == [{"type": "hello", "userId": "bob"}]
        assert hub.connection_count == 3
        for connection in connections:
            await hub.disconnect(connection)
        assert hub.connection_count == 0
        assert hub_tasks() == []

    asyncio.run(go())


def test_publishing_to_a_user_without_connections_reaches_nobody():
    async def go():
        assert Hub().publish("carol", {"id": "n1"}) == 0

    asyncio.run(go())


def test_a_full_queue_closes_only_that_connection_with_1013():
    async def go():
        hub = Hub(queue_size=2)
        fast, slow, other_tab = FakeSocket(), FakeSocket(stalled=True), FakeSocket()
        hub.connect("alice", fast, None)
        stuck = hub.connect("alice", slow, None)
        hub.connect("alice", other_tab, None)
        await settle()
        for n in range(6):
            hub.publish("alice", {"n": n})
            await settle()
        assert slow.closed_with == (WSCloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON)
        assert slow.sent == [{"type": "hello", "userId": "alice"}]
        assert fast.notifications == other_tab.notifications == [{"n": n} for n in range(6)]
        assert stuck not in hub.connections_of("alice")
        assert hub.connection_count == 2
        assert hub.slow_consumer_closes == 1
        await hub.disconnect(stuck)
        assert stuck.close_code == WSCloseCode.TRY_AGAIN_LATER
        await hub.shutdown()
        assert hub_tasks() == []

    asyncio.run(go())


def test_queue_depth_counts_what_stalled_connections_have_not_sent():
    async def go():
        hub = Hub(queue_size=8)
        hub.connect("alice", FakeSocket(stalled=True), None)
        hub.connect("bob", FakeSocket(stalled=True), None)
        await settle()
        hub.publish("alice", {"n": 1})
        hub.publish("alice", {"n": 2})
        hub.publish("bob", {"n": 1})
        assert hub.queue_depth == 3
        await hub.shutdown()
        assert hub.queue_depth == 0

    asyncio.run(go())


def test_a_peer_that_does_not_take_the_close_frame_is_aborted():
    async def go():
        hub = Hub(queue_size=1, close_timeout_s=0.05)
        transport = FakeTransport()
        socket = FakeSocket(stalled=True, stubborn=True)
        connection = hub.connect("alice", socket, transport)
        await settle()
        hub.publish("alice", {"n": 1})
        hub.publish("alice", {"n": 2})
        await hub.disconnect(connection)
        assert socket.closed_with[0] == WSCloseCode.TRY_AGAIN_LATER
        assert transport.aborted
        assert hub_tasks() == []

    asyncio.run(go())


def test_shutdown_closes_every_connection_with_1001_and_refuses_new_ones():
    async def go():
        hub = Hub()
        sockets = [FakeSocket(), FakeSocket(stalled=True), FakeSocket()]
        for user, socket in zip(["alice", "alice", "bob"], sockets, strict=True):
            hub.connect(user, socket, None)
        await settle()
        await hub.shutdown()
        assert [s.closed_with[0] for s in sockets] == [WSCloseCode.GOING_AWAY] * 3
        assert hub.connection_count == 0
        late = FakeSocket()
        connection = hub.connect("alice", late, None)
        await hub.disconnect(connection)
        assert late.closed_with[0] == WSCloseCode.GOING_AWAY
        assert hub.publish("alice", {"n": 1}) == 0
        assert hub_tasks() == []

    asyncio.run(go())


def test_a_socket_that_fails_to_write_stops_taking_messages_without_a_1013():
    async def go():
        class Broken(FakeSocket):
            async def send_str(self, data):
                raise ConnectionResetError("Cannot write to closing transport")

        hub = Hub(queue_size=1)
        broken = Broken()
        connection = hub.connect("alice", broken, None)
        await settle()
        assert hub.publish("alice", {"n": 1}) == 0
        assert hub.publish("alice", {"n": 2}) == 0
        assert broken.closed_with is None
        assert hub.slow_consumer_closes == 0
        await hub.disconnect(connection)

    asyncio.run(go())
