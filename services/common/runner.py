"""Run an aiohttp service: serve, register in Consul, and stop cleanly on SIGTERM/SIGINT.

Start: the application's startup hooks (database pool, migrations) run, the listener binds,
then registration (the mesh's SHOPMESH_REGISTRATION, with this process's version) runs in the
background so the health check already answers when Consul first probes it. Stop: deregister
first (the mesh stops sending traffic), then stop accepting and let in-flight requests finish,
then the cleanup hooks close the pool.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from services.common import admin, event_loop, metrics, telemetry
from services.common.config import ServiceSettings, service_version
from services.common.consul import ConsulAgent, ConsulError, register_until
from services.common.in_flight import in_flight_middleware
from services.common.logging import JsonAccessLogger

log = logging.getLogger(__name__)


class StartupError(Exception):
    """A known reason a service cannot start; logged without a traceback."""


def run(
    app: web.Application,
    settings: ServiceSettings,
    *,
    register_deadline_s: float = 60.0,
    shutdown_timeout_s: float = 10.0,
) -> int:
    """Serve `app` until SIGTERM/SIGINT; return the process exit code."""
    return event_loop.run(
        serve(
            app,
            settings,
            register_deadline_s=register_deadline_s,
            shutdown_timeout_s=shutdown_timeout_s,
        )
    )


async def serve(
    app: web.Application,
    settings: ServiceSettings,
    *,
    register_deadline_s: float,
    shutdown_timeout_s: float,
) -> int:
    stop = stop_on_signals()
    app.cleanup_ctx.append(_admin_port(settings))
    app.middlewares.insert(0, in_flight_middleware())
    app.middlewares.insert(0, metrics.http_middleware(settings.service))
    # Outermost: the request's span is current in every other middleware and the handler.
    app.middlewares.insert(0, telemetry.http_middleware())
    runner = web.AppRunner(
        app, access_log_class=JsonAccessLogger, shutdown_timeout=shutdown_timeout_s
    )
    try:
        if not await unless_stopped(_start(runner, settings), stop):
            await runner.cleanup()
            return 0
    except (StartupError, admin.AdminPortError) as exc:
        log.error("startup failed", extra={"error": str(exc)})
        await runner.cleanup()
        return 1
    except Exception:
        log.exception("startup failed")
        await runner.cleanup()
        return 1

    exit_code = await registered_until_stopped(
        settings, stop, register_deadline_s=register_deadline_s
    )
    log.info("stopping", extra={"shutdown_timeout_s": shutdown_timeout_s})
    await runner.cleanup()
    log.info("stopped")
    return exit_code


async def _start(runner: web.AppRunner, settings: ServiceSettings) -> None:
    await runner.setup()
    site = web.TCPSite(runner, settings.bind_host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.bind_host}:{settings.port}: {exc}") from exc
    log.info("listening", extra={"host": settings.bind_host, "port": settings.port})


def _admin_port(settings: ServiceSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """/metrics and /health on the instance's metrics port, from the app's start to its cleanup."""

    async def serving(_app: web.Application) -> AsyncIterator[None]:
        async with admin.admin_port(
            settings.bind_host, settings.metrics_port, settings.database_url
        ):
            yield

    return serving


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT (no KeyboardInterrupt, no traceback)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    return stop


async def registered_until_stopped(
    settings: ServiceSettings,
    stop: asyncio.Event,
    *,
    register_deadline_s: float,
    before_deregister: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Register the mesh's registration (with this process's version) in the background and
    wait for `stop`, then deregister; return the exit code.

    The listener already answers, so the first health check Consul makes can pass. A
    registration that fails until its deadline stops the service with exit code 1.
    `before_deregister` runs first on the way out (a gRPC server turns its health NOT_SERVING).
    Without a registration (the platform registers the instance: consul-k8s) it only waits.
    """
    if settings.registration is None:
        await stop.wait()
        if before_deregister is not None:
            await before_deregister()
        return 0
    exit_code = 0
    registration = with_version(settings.registration, service_version())
    async with aiohttp.ClientSession() as session:
        agent = ConsulAgent(
            settings.consul_http_addr,
            session,
            token=settings.consul_token,
            tls=settings.consul_tls(),
        )
        registering = asyncio.create_task(
            register_until(agent, registration, deadline_s=register_deadline_s)
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({registering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if registering.done() and registering.exception() is not None:
            log.error(
                "could not register in consul, stopping",
                extra={"error": str(registering.exception())},
            )
            exit_code = 1
        elif registering.done():
            await stopping
        registering.cancel()
        stopping.cancel()
        await asyncio.gather(registering, stopping, return_exceptions=True)
        if before_deregister is not None:
            await before_deregister()
        await _deregister(agent, settings.instance)
    return exit_code


def with_version(registration: dict[str, Any], version: str) -> dict[str, Any]:
    """`registration` with `version` in its Meta: the version of the code this process runs, the
    one thing about the instance the process knows and the mesh does not (mesh/registration.py).
    """
    meta = {k: v for k, v in registration.get("Meta", {}).items() if k != "version"}
    return {**registration, "Meta": {"version": version, **meta}}


async def unless_stopped(startup: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run `startup` unless a stop signal comes first; False if the signal won."""
    starting = asyncio.ensure_future(startup)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    log.info("stopped during startup")
    return False


async def _deregister(agent: ConsulAgent, service_id: str) -> None:
    try:
        await agent.deregister(service_id)
    except ConsulError as exc:
        log.warning(
            "consul deregistration failed", extra={"service_id": service_id, "error": str(exc)}
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning(
            "consul not reachable for deregistration",
            extra={"service_id": service_id, "error": f"{type(exc).__name__}: {exc}"},
        )
    else:
        log.info("deregistered from consul", extra={"service_id": service_id})


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("stop signal received", extra={"signal": sig.name})
    stop.set()
