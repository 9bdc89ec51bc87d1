"""Run a gRPC service: serve, report health, register in Consul, stop cleanly on SIGTERM/SIGINT.

Start: the server binds SHOPMESH_BIND_HOST:SHOPMESH_PORT (a taken port fails at once), the
database pool opens and the service's migrations apply, the service wires its servicers
(`Wiring`), the server starts, and grpc.health.v1 turns SERVING (overall "" and each service
name), and so does /health on the admin port. Registration (the mesh's SHOPMESH_REGISTRATION)
then runs in the background, as in services.common.runner, so the check already passes when
Consul first probes it.

Every RPC goes through the same interceptors: OpenTelemetry's (a SERVER span per RPC),
services.common.rpc.ErrorInterceptor (domain errors to status codes, one JSON log line per RPC)
around services.common.faults.FaultInterceptor (the fault flags in Consul KV, watched for as
long as the process runs) and services.common.rpc.DecodeInterceptor (a request that does not
parse is INVALID_ARGUMENT).

Stop: health NOT_SERVING, deregister (the mesh stops sending traffic), the service's `on_stop`
hook (ends long-lived streams), `server.stop(grace)` for in-flight RPCs, then the wiring's
cleanup and the pool close. Exit code 0 after a signal; 1 when startup or registration fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from services.common import event_loop
from services.common.admin import AdminPortError, admin_port
from services.common.auth.interceptor import AuthInterceptor
from services.common.auth.jwks import Jwks
from services.common.auth.jwt import KeySource
from services.common.config import ServiceSettings
from services.common.db import close_pool, create_pool
from services.common.faults import FaultInterceptor, FaultSource, FaultWatcher
from services.common.metrics import GrpcMetricsInterceptor
from services.common.migrations import ServiceMigrations, apply_migrations
from services.common.rpc import DecodeInterceptor, ErrorInterceptor
from services.common.runner import (
    StartupError,
    registered_until_stopped,
    stop_on_signals,
    unless_stopped,
)

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Request metadata up to 16 KiB, the soft limit and the hard one alike: gRPC's default soft
# limit of 8 KiB refuses a random share of the calls above it (RESOURCE_EXHAUSTED, a 429 through
# the transcoder). Whatever the edge lets through (mesh/components/edge.py
# MAX_REQUEST_HEADER_BYTES), with what the mesh adds on the way, fits.
MAX_METADATA_BYTES = 16 * 1024

# gRPC sets SO_REUSEPORT by default, which lets a second process bind the same port and
# silently share its traffic; an instance's port must be its own.
SERVER_OPTIONS = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
)

# Not traced: Consul probes the health check every few seconds.
INFRASTRUCTURE_CALLS = filters.any_of(
    filters.health_check(), filters.service_prefix("grpc.reflection.")
)


@dataclass(frozen=True)
class Servicer:
    """A servicer and the generated function that adds it to a server."""

    name: str  # the full service name, e.g. "shopmesh.users.v1.UserService"
    implementation: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]


@dataclass(frozen=True)
class GrpcApp:
    """What a service's wiring gives the server."""

    servicers: Sequence[Servicer]
    # Runs after deregistration, before the server's grace period: end long-lived streams.
    on_stop: Callable[[], Awaitable[None]] | None = None


# Given the migrated pool and the settings, build the servicers; the context's exit releases
# what they hold.
Wiring = Callable[[asyncpg.Pool, ServiceSettings], AbstractAsyncContextManager[GrpcApp]]


def interceptors(
    service: str, faults: FaultSource, keys: KeySource
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor chain of every gRPC service, outermost first: a SERVER span continuing
    the caller's `traceparent` metadata (not for health checks and reflection), metrics see
    the final status, errors are mapped, the caller's internal token is verified, faults
    apply, then a request that does not parse is refused."""
    return [
        aio_server_interceptor(filter_=filters.negate(INFRASTRUCTURE_CALLS)),
        GrpcMetricsInterceptor(service),
        ErrorInterceptor(),
        AuthInterceptor(keys),
        FaultInterceptor(faults),
        DecodeInterceptor(),
    ]


def run(
    settings: ServiceSettings,
    wiring: Wiring,
    *,
    migrations: ServiceMigrations,
    register_deadline_s: float = 60.0,
    grace_s: float = 5.0,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    return event_loop.run(
        serve(
            settings,
            wiring,
            migrations=migrations,
            register_deadline_s=register_deadline_s,
            grace_s=grace_s,
        )
    )


async def serve(
    settings: ServiceSettings,
    wiring: Wiring,
    *,
    migrations: ServiceMigrations,
    register_deadline_s: float,
    grace_s: float,
) -> int:
    stop = stop_on_signals()
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", NOT_SERVING)
    async with AsyncExitStack() as resources:
        watcher = await resources.enter_async_context(
            FaultWatcher(
                settings.consul_http_addr,
                settings.service,
                token=settings.consul_token,
                tls=settings.consul_tls(),
            )
        )
        jwks = Jwks.for_settings(settings)
        resources.push_async_callback(jwks.close)
        server = grpc.aio.server(
            interceptors=interceptors(settings.service, lambda: watcher.current, jwks),
            options=SERVER_OPTIONS,
        )
        started: list[GrpcApp] = []
        startup = _start(server, health_servicer, settings, wiring, migrations, resources, started)
        try:
            if not await unless_stopped(startup, stop):
                return 0
        except (StartupError, AdminPortError) as exc:
            log.error("startup failed", extra={"error": str(exc)})
            return 1
        except Exception:
            log.exception("startup failed")
            return 1

        exit_code = await registered_until_stopped(
            settings,
            stop,
            register_deadline_s=register_deadline_s,
            before_deregister=health_servicer.enter_graceful_shutdown,
        )
        log.info("stopping", extra={"grace_s": grace_s})
        app = started[0]
        if app.on_stop is not None:
            await app.on_stop()
        await server.stop(grace_s)
    log.info("stopped")
    return exit_code


async def _start(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    settings: ServiceSettings,
    wiring: Wiring,
    migrations: ServiceMigrations,
    resources: AsyncExitStack,
    started: list[GrpcApp],
) -> None:
    address = f"{_host(settings.bind_host)}:{settings.port}"
    try:
        server.add_insecure_port(address)  # binds now (a taken port fails fast); serves on start
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: {exc}") from exc
    pool = await create_pool(settings.database_url)
    resources.push_async_callback(close_pool, pool)
    await apply_migrations(pool, migrations)
    app = await resources.enter_async_context(wiring(pool, settings))
    for servicer in app.servicers:
        servicer.add_to_server(servicer.implementation, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await server.start()
    resources.push_async_callback(server.stop, 0)
    await resources.enter_async_context(
        admin_port(settings.bind_host, settings.metrics_port, settings.database_url)
    )
    for name in ("", *(servicer.name for servicer in app.servicers)):
        await health_servicer.set(name, SERVING)
    started.append(app)
    log.info(
        "listening",
        extra={
            "host": settings.bind_host,
            "port": settings.port,
            "services": [servicer.name for servicer in app.servicers],
        },
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
