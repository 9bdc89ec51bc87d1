"""web's admin adapter against a TLS server on loopback with a certificate of the Consul CA (as
the agent's HTTPS API): every call checks the agent with the CA it is given, and only it."""

import asyncio
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from mesh.runtime.paths import StateDir
from mesh.runtime.tls import consul_ca, ensure_consul_certs
from services.common.errors import Unavailable
from services.web.admin import ConsulAdmin

TOKEN = "web-token"


async def with_agent(state: StateDir, test) -> None:
    (certs,) = ensure_consul_certs(state, {"consul": (["localhost"], ["127.0.0.1"])}).values()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.cert, certs.key)
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        assert request.headers["X-Consul-Token"] == TOKEN
        return web.json_response([])

    async def no_flags(request: web.Request) -> web.Response:
        assert request.headers["X-Consul-Token"] == TOKEN
        return web.Response(status=404)

    app.router.add_get("/v1/health/state/any", health)
    app.router.add_get("/v1/kv/{key:.*}", no_flags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await test(f"https://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def run(tmp_path: Path, test) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    asyncio.run(asyncio.wait_for(with_agent(state, lambda addr: test(state, addr)), timeout=20))


def test_the_health_and_the_fault_flags_are_read_checking_the_agent_with_the_consul_ca(
    tmp_path: Path,
) -> None:
    async def test(state: StateDir, addr: str) -> None:
        admin = ConsulAdmin(addr, TOKEN, ssl.create_default_context(cafile=consul_ca(state)))
        try:
            assert await admin.health() == []
            assert await admin.faults() == {}
        finally:
            await admin.close()

    run(tmp_path, test)


def test_an_agent_the_given_trust_does_not_vouch_for_is_unavailable(tmp_path: Path) -> None:
    async def test(_state: StateDir, addr: str) -> None:
        admin = ConsulAdmin(addr, TOKEN, ssl.create_default_context())
        try:
            for call in (admin.health, admin.faults):
                with pytest.raises(Unavailable, match="consul did not answer"):
                    await call()
        finally:
            await admin.close()

    run(tmp_path, test)
