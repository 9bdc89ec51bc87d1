"""The instance's admin port (`metrics_port` in the topology): GET /metrics for Prometheus and
GET /health for Consul's check, served by threads of their own, never by the service's event loop
(services/common/health.py says why)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import MetricsHandler

from services.common.health import DatabaseProbe, HealthCheck, Heartbeat
from services.common.problem import UNAVAILABLE

HEALTH_PATH = "/health"


class _Handler(MetricsHandler):
    health: HealthCheck | None = None

    def do_GET(self) -> None:
        if urlsplit(self.path).path != HEALTH_PATH:
            super().do_GET()
            return
        if self.health is None:
            self._answer(HTTPStatus.NOT_FOUND, "application/json", {"status": "no health check"})
            return
        problem = self.health.problem()
        if problem is None:
            self._answer(HTTPStatus.OK, "application/json", {"status": "ok"})
            return
        self._answer(HTTPStatus.SERVICE_UNAVAILABLE, "application/problem+json", {
            "type": UNAVAILABLE, "title": "Service unavailable", "status": 503,
            "detail": problem, "instance": HEALTH_PATH,
        })  # fmt: skip

    def _answer(self, status: HTTPStatus, content_type: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class AdminServer:
    """/metrics and /health on host:port, in daemon threads, until `stop`."""

    def __init__(self, host: str, port: int, health: HealthCheck | None = None) -> None:
        handler = type("AdminHandler", (_Handler,), {"health": health})
        self._health = health
        self._server = (_Server6 if ":" in host else _Server)((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="admin", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> AdminServer:
        if self._health is not None:
            self._health.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._health is not None:
            self._health.stop()


@asynccontextmanager
async def admin_port(host: str, port: int | None, database_url: str) -> AsyncIterator[None]:
    """The admin server for the running event loop's service while the block runs: /metrics,
    and /health from this loop's heartbeat and a probe of `database_url` (none if it is empty).
    Nothing without a port."""
    if port is None:
        yield
        return
    heartbeat = Heartbeat()
    beating = asyncio.create_task(heartbeat.run())
    try:
        server = AdminServer(
            host,
            port,
            HealthCheck(heartbeat, DatabaseProbe(database_url) if database_url else None),
        )
    except OSError as exc:
        beating.cancel()
        raise AdminPortError(f"cannot serve /metrics and /health on {host}:{port}: {exc}") from exc
    server.start()
    try:
        yield
    finally:
        beating.cancel()
        await asyncio.to_thread(server.stop)


class AdminPortError(OSError):
    """The admin port cannot be bound."""
