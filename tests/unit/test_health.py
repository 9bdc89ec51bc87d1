"""GET /health: answered on a connection of its own, one ping at a time, reconnecting."""

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common import health
from services.common.health import HEALTH, DatabaseProbe
from services.common.problem import problem_middleware


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


class Readiness:
    def __init__(self, ready: bool) -> None:
        self.answer = ready

    async def ready(self) -> bool:
        return self.answer


def get_health(ready: bool) -> tuple[int, str, dict]:
    async def go():
        app = web.Application(middlewares=[problem_middleware])
        app.add_routes(health.routes)
        app[HEALTH] = Readiness(ready)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/health")
            return resp.status, resp.headers["Content-Type"], await resp.json(content_type=None)

    return run(go())


def test_health_is_ok_while_the_database_answers():
    assert get_health(True) == (200, "application/json; charset=utf-8", {"status": "ok"})


def test_health_is_a_503_problem_when_the_database_does_not_answer():
    status, content_type, body = get_health(False)
    assert (status, content_type) == (503, "application/problem+json")
    assert body["type"] == "/problems/unavailable" and body["status"] == 503
