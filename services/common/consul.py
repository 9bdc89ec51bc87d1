"""Registration with the local Consul agent, including the instance's Connect sidecar."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from mesh.envoy_tracing import EnvoyTracer
from mesh.registration import (
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    DEREGISTER_CRITICAL_AFTER,
    FAILURES_BEFORE_CRITICAL,
)
from services.common.config import ConfigError, ServiceSettings

log = logging.getLogger(__name__)


def health_check(settings: ServiceSettings) -> dict[str, Any]:
    """A Consul HTTP check against GET /health on the instance's admin port (the metrics port),
    answered off the service's event loop (services/common/health.py), for HTTP and gRPC
    services alike."""
    if settings.metrics_port is None:
        raise ConfigError("SHOPMESH_METRICS_PORT is needed: Consul checks /health on that port")
    return {
        "Name": f"{settings.instance} /health",
        "HTTP": f"http://{_host(settings.bind_host)}:{settings.metrics_port}/health",
        "Method": "GET",
        "Interval": CHECK_INTERVAL,
        "Timeout": CHECK_TIMEOUT,
        "FailuresBeforeCritical": FAILURES_BEFORE_CRITICAL,
        "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
    }


def registration_body(settings: ServiceSettings, *, version: str) -> dict[str, Any]:
    """The body of PUT /v1/agent/service/register for this instance and its sidecar."""
    return {
        "ID": settings.instance,
        "Name": settings.service,
        "Address": settings.bind_host,
        "Port": settings.port,
        "Meta": _meta(settings, version),
        "Check": health_check(settings),
        "Connect": {
            "SidecarService": sidecar_service(
                instance=settings.instance,
                port=settings.sidecar_port,
                address=settings.sidecar_bind_host,
                local_address=settings.bind_host,
                local_port=settings.port,
                upstreams=[(u.name, u.local_bind_port) for u in settings.upstreams],
                metrics_port=settings.sidecar_metrics_port,
                tracer=(
                    EnvoyTracer(f"{settings.service}-sidecar", settings.otlp_endpoint)
                    if settings.otlp_endpoint
                    else None
                ),
            )
        },
    }


def _meta(settings: ServiceSettings, version: str) -> dict[str, str]:
    """Service metadata; `metrics_port` is how Prometheus (Consul service discovery) finds
    the instance's /metrics."""
    meta = {"version": version}
    if settings.metrics_port is not None:
        meta["metrics_port"] = str(settings.metrics_port)
    return meta


def sidecar_service(
    *,
    instance: str,
    port: int,
    address: str,
    local_address: str,
    local_port: int,
    upstreams: list[tuple[str, int]],
    metrics_port: int | None = None,
    tracer: EnvoyTracer | None = None,
) -> dict[str, Any]:
    """The Connect sidecar registered with an instance (also used for the edge's sidecar).

    The checks are Consul's defaults (listener reachable, parent healthy) at a 1 s interval
    instead of 10 s: a re-registered sidecar starts critical, and the edge must not wait 10 s
    for it after a service restarts. With `metrics_port`, Envoy serves its stats for Prometheus
    on `address:metrics_port/metrics` (found through Consul by mesh/runtime/consul_sd.py).
    With `tracer`, the sidecar's Envoy sends a span for every request it proxies.
    """
    proxy: dict[str, Any] = {
        "LocalServiceAddress": local_address,
        "LocalServicePort": local_port,
        "Upstreams": [
            {"DestinationName": name, "LocalBindAddress": "127.0.0.1", "LocalBindPort": bind}
            for name, bind in upstreams
        ],
    }
    proxy_config: dict[str, Any] = {}
    if metrics_port is not None:
        proxy_config["envoy_prometheus_bind_addr"] = f"{_host(address)}:{metrics_port}"
    if tracer is not None:
        proxy_config.update(tracer.proxy_config())
    if proxy_config:
        proxy["Config"] = proxy_config
    return {
        "Port": port,
        "Address": address,
        "Proxy": proxy,
        "Checks": [
            {
                "Name": "Connect Sidecar Listening",
                "TCP": f"{_host(address)}:{port}",
                "Interval": CHECK_INTERVAL,
                "Timeout": CHECK_TIMEOUT,
                "FailuresBeforeCritical": FAILURES_BEFORE_CRITICAL,
            },
            {"Name": "Connect Sidecar Aliasing " + instance, "AliasService": instance},
        ],
    }


class ConsulError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ConsulAgent:
    """The few agent endpoints a service needs. Registering the same ID again replaces it."""

    def __init__(
        self, http_addr: str, session: aiohttp.ClientSession, *, timeout_s: float = 2.0
    ) -> None:
        self._base = http_addr.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def register(self, body: dict[str, Any]) -> None:
        await self._put("/v1/agent/service/register", json=body)

    async def deregister(self, service_id: str) -> None:
        await self._put(f"/v1/agent/service/deregister/{service_id}")

    async def _put(self, path: str, json: dict[str, Any] | None = None) -> None:
        async with self._session.put(self._base + path, json=json, timeout=self._timeout) as resp:
            if resp.status != 200:
                raise ConsulError(resp.status, (await resp.text()).strip()[:500])


async def register_until(
    agent: ConsulAgent, body: dict[str, Any], *, deadline_s: float = 60.0
) -> None:
    """Register `body`, retrying with backoff while the agent is unreachable or failing.

    A 4xx answer is a bad registration and is raised at once; connection errors, timeouts and
    5xx answers are retried until `deadline_s`, each logged, then the last one is raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        try:
            await agent.register(body)
        except ConsulError as exc:
            if exc.status < 500:
                raise
            error: Exception = exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = exc
        else:
            log.info(
                "registered in consul",
                extra={"service_id": body["ID"], "attempt": attempt},
            )
            return
        remaining = deadline - loop.time()
        log.warning(
            "consul registration failed",
            extra={
                "service_id": body["ID"],
                "attempt": attempt,
                "error": f"{type(error).__name__}: {error}",
                "retry_in_s": round(min(delay, max(remaining, 0)), 2),
            },
        )
        if remaining <= 0:
            raise error
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
