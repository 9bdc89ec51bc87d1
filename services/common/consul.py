"""Registration with the local Consul agent: the instance registers the document the mesh gave
it (SHOPMESH_REGISTRATION, made by mesh/registration.py), retrying until a deadline, and
deregisters on a graceful stop."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import aiohttp

from services.common.retry import Backoff, Failure, retry

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Consul-Token"


class ConsulError(Exception):
    """The agent answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ConsulAgent:
    """The few agent endpoints a service needs, over the agent's HTTPS API (the agent checked
    with `tls`). Registering the same ID again replaces it."""

    def __init__(
        self,
        http_addr: str,
        session: aiohttp.ClientSession,
        *,
        token: str,
        tls: ssl.SSLContext,
        timeout_s: float = 2.0,
    ) -> None:
        self._base = http_addr.rstrip("/")
        self._session = session
        self._headers = {TOKEN_HEADER: token}
        self._tls = tls
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def register(self, body: dict[str, Any]) -> None:
        await self._put("/v1/agent/service/register", json=body)

    async def deregister(self, service_id: str) -> None:
        await self._put(f"/v1/agent/service/deregister/{service_id}")

    async def _put(self, path: str, json: dict[str, Any] | None = None) -> None:
        async with self._session.put(
            self._base + path,
            json=json,
            headers=self._headers,
            ssl=self._tls,
            timeout=self._timeout,
        ) as resp:
            if resp.status != 200:
                raise ConsulError(resp.status, (await resp.text()).strip()[:500])


async def register_until(
    agent: ConsulAgent, body: dict[str, Any], *, deadline_s: float = 60.0
) -> None:
    """Register `body`, retrying with backoff while the agent is unreachable or failing.

    A 4xx answer is a bad registration and is raised at once; connection errors, timeouts and
    5xx answers are retried until `deadline_s`, each logged, then the last one is raised.
    """
    attempts = 0

    async def register() -> None:
        nonlocal attempts
        attempts += 1
        await agent.register(body)

    def failed(failure: Failure) -> None:
        log.warning(
            "consul registration failed",
            extra={
                "service_id": body["ID"],
                "attempt": failure.attempt,
                "error": f"{type(failure.error).__name__}: {failure.error}",
                "retry_in_s": round(failure.retry_in_s, 2),
            },
        )

    await retry(
        register,
        backoff=Backoff(initial_s=0.2, max_s=5.0),
        retryable=_worth_retrying,
        on_failure=failed,
        deadline_s=deadline_s,
    )
    log.info("registered in consul", extra={"service_id": body["ID"], "attempt": attempts})


def _worth_retrying(error: Exception) -> bool:
    """The agent is unreachable, slow, or failing on its side (not refusing the registration)."""
    if isinstance(error, ConsulError):
        return error.status >= 500
    return isinstance(error, aiohttp.ClientError | TimeoutError)
