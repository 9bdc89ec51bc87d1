from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from services.common.in_flight import in_flight_middleware
from services.common.problem import PROBLEM_CONTENT_TYPE, UNAVAILABLE


def app(release: asyncio.Event, entered: asyncio.Queue[str]) -> web.Application:
    application = web.Application(middlewares=[in_flight_middleware(limit=2)])

    async def slow(request: web.Request) -> web.Response:
        await entered.put(request.path)
        await release.wait()
        return web.json_response({"ok": True})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await entered.put(request.path)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    application.router.add_get("/slow/{n}", slow)
    application.router.add_get("/ws", socket)
    return application


def test_past_the_limit_a_request_gets_a_503_problem_at_once_and_the_next_is_admitted() -> None:
    async def go() -> None:
        release, entered = asyncio.Event(), asyncio.Queue[str]()
        async with TestClient(TestServer(app(release, entered))) as client:
            held = [asyncio.create_task(client.get(f"/slow/{n}")) for n in range(2)]
            for _ in held:
                await asyncio.wait_for(entered.get(), 5)

            refused = await asyncio.wait_for(client.get("/slow/3"), 5)
            assert refused.status == 503
            assert refused.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
            assert refused.headers["Retry-After"] == "1"
            body = await refused.json(content_type=PROBLEM_CONTENT_TYPE)
            assert body["type"] == UNAVAILABLE and body["instance"] == "/slow/3"
            assert entered.empty()

            release.set()
            assert [(await r).status for r in held] == [200, 200]
            assert (await client.get("/slow/4")).status == 200

    asyncio.run(go())


def test_open_websockets_are_not_counted() -> None:
    async def go() -> None:
        release, entered = asyncio.Event(), asyncio.Queue[str]()
        async with TestClient(TestServer(app(release, entered))) as client:
            sockets = [await client.ws_connect("/ws") for _ in range(3)]
            for _ in sockets:
                await asyncio.wait_for(entered.get(), 5)
            held = [asyncio.create_task(client.get(f"/slow/{n}")) for n in range(2)]
            for _ in held:
                await asyncio.wait_for(entered.get(), 5)

            await sockets[0].send_str("ping")
            reply = await asyncio.wait_for(sockets[0].receive(), 5)
            assert reply.type == WSMsgType.TEXT and reply.data == "ping"

            release.set()
            assert [(await r).status for r in held] == [200, 200]
            for ws in sockets:
                await ws.close()

    asyncio.run(go())
