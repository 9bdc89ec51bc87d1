"""/health on the admin port: the event loop's heartbeat and a database probe on a connection,
a loop and a thread of its own, one ping at a time, reconnecting."""

import asyncio
import json
import urllib.error
import urllib.request

from services.common.admin import AdminServer
from services.common.health import DatabaseProbe, HealthCheck, Heartbeat
from tests.support import wait_until


class FakeConnection:
    def __init__(self, *, fails: bool = False, delay_s: float = 0.0) -> None:
        self.fails = fails
        self.delay_s = delay_s
        self.pings = 0
        self.closed = False

    async def fetchval(self, _query: str) -> int:
        self.pings += 1
        await asyncio.sleep(self.delay_s)
        if self.fails:
            raise ConnectionResetError("server closed the connection")
        return 1

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True


class Connector:
    def __init__(self, *connections: FakeConnection) -> None:
        self.waiting = list(connections)
        self.made: list[FakeConnection] = []

    async def __call__(self, _dsn: str) -> FakeConnection:
        if not self.waiting:
            raise ConnectionRefusedError("nothing listens there")
        self.made.append(self.waiting.pop(0))
        return self.made[-1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_the_probe_keeps_one_connection_across_pings():
    connector = Connector(FakeConnection())
    probe = DatabaseProbe("postgresql://db", connect=connector)

    async def go():
        return [await probe.ready() for _ in range(3)]

    assert run(go()) == [True, True, True]
    assert len(connector.made) == 1 and connector.made[0].pings == 3


def test_probes_arriving_during_a_ping_share_its_answer():
    connector = Connector(FakeConnection(delay_s=0.05))
    probe = DatabaseProbe("postgresql://db", connect=connector)

    async def go():
        return await asyncio.gather(*(probe.ready() for _ in range(5)))

    assert run(go()) == [True] * 5
    assert connector.made[0].pings == 1


def test_a_broken_connection_is_not_ready_and_is_replaced_by_the_next_probe():
    broken = FakeConnection(fails=True)
    connector = Connector(broken, FakeConnection())
    probe = DatabaseProbe("postgresql://db", connect=connector)

    async def go():
        return [await probe.ready(), await probe.ready()]

    assert run(go()) == [False, True]
    assert broken.closed


def test_a_database_that_does_not_answer_in_time_is_not_ready():
    probe = DatabaseProbe("postgresql://db", timeout_s=0.05, connect=Connector(
        FakeConnection(delay_s=1.0)))  # fmt: skip
    assert run(probe.ready()) is False


def test_no_database_is_not_ready():
    assert run(DatabaseProbe("postgresql://db", connect=Connector()).ready()) is False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def serving(check: HealthCheck | None) -> AdminServer:
    return AdminServer("127.0.0.1", 0, check).start()


def get(server: AdminServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def database(*connections: FakeConnection) -> DatabaseProbe:
    return DatabaseProbe("postgresql://db", connect=Connector(*connections))


def test_health_is_ok_while_the_loop_beats_and_the_database_answers():
    # No event loop of the service runs here at all: the answer never waits for one.
    server = serving(HealthCheck(Heartbeat(), database(FakeConnection())))
    try:
        status, content_type, body = get(server, "/health")
    finally:
        server.stop()
    assert (status, content_type, json.loads(body)) == (200, "application/json", {"status": "ok"})


def test_health_is_a_503_problem_when_the_database_does_not_answer():
    server = serving(HealthCheck(Heartbeat(), database()))
    try:
        status, content_type, body = get(server, "/health")
    finally:
        server.stop()
    problem = json.loads(body)
    assert (status, content_type) == (503, "application/problem+json")
    assert problem["type"] == "/problems/unavailable" and problem["status"] == 503
    assert problem["detail"] == "the database does not answer"


def test_health_is_a_503_problem_when_the_event_loop_has_stalled():
    clock = Clock()
    heartbeat = Heartbeat(clock)
    server = serving(HealthCheck(heartbeat, database(FakeConnection()), stall_s=5.0))
    try:
        clock.now += 4.0
        busy = get(server, "/health")[0]
        clock.now += 2.0
        status, _, body = get(server, "/health")
        heartbeat.beat()
        again = get(server, "/health")[0]
    finally:
        server.stop()
    assert busy == 200, "a loop that is only slow is not a stalled one"
    assert status == 503 and json.loads(body)["detail"] == "the event loop has not run for 6.0s"
    assert again == 200


def test_the_heartbeat_is_refreshed_by_its_event_loop():
    clock = Clock()
    heartbeat = Heartbeat(clock)
    clock.now += 60.0

    async def beat_once() -> None:
        beating = asyncio.create_task(heartbeat.run(every_s=0.01))
        await wait_until(lambda: heartbeat.age_s() == 0.0, timeout=5, what="a heartbeat")
        beating.cancel()

    run(beat_once())
    assert heartbeat.age_s() == 0.0


def test_the_admin_port_serves_metrics_beside_health():
    server = serving(None)
    try:
        status, content_type, body = get(server, "/metrics")
        no_check = get(server, "/health")[0]
    finally:
        server.stop()
    assert status == 200 and content_type.startswith("text/plain")
    assert b"python_info" in body
    assert no_check == 404
