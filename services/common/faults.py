"""Fault flags from Consul KV: injected latency and errors, changed without a restart.

Key `shopmesh/faults/<service>`, value JSON:

    {"error_rate": 0.5, "latency_ms": 200, "methods": ["ProcessPayment"]}

- `error_rate` (0..1, default 0): the probability a matching call fails with gRPC UNAVAILABLE
  "injected fault" or HTTP 503 (problem type /problems/injected-fault);
- `latency_ms` (0..60000, default 0): added before every matching call, failing or not;
- `methods` (optional): gRPC method short names (`ProcessPayment`) or HTTP path prefixes
  (`/orders`); missing or empty means every method. Health checks are never affected, so the
  mesh keeps routing to the instance and the injected errors reach callers.

A missing key means no faults. A value that is not valid JSON or breaks the ranges above is
logged as a warning and treated as no faults.

`FaultWatcher` follows the key with Consul blocking queries (stale reads allowed), so a change
applies within about a second. While Consul is unreachable the last known flags stay in force;
failures are logged at most once per `FAILURE_LOG_INTERVAL_S`, and the watch resumes (retrying
at most `BACKOFF_MAX_S` apart) when Consul returns.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common import rpc
from services.common.consul import TOKEN_HEADER
from services.common.metrics import FAULT_INJECTION_ACTIVE
from services.common.problem import INJECTED_FAULT as INJECTED_FAULT_PROBLEM
from services.common.problem import Problem
from services.common.retry import Backoff, retry

log = logging.getLogger(__name__)

KEY_PREFIX = "shopmesh/faults/"
MAX_LATENCY_MS = 60_000
INJECTED_FAULT = "injected fault"
WAIT = "30s"
REQUEST_TIMEOUT_S = 40.0  # longer than WAIT plus the jitter Consul adds (up to WAIT/16)
MIN_REQUEST_INTERVAL_S = 0.1  # Consul may answer a blocking query at once: never spin
FAILURE_LOG_INTERVAL_S = 5.0
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 2.0

Random = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
FaultSource = Callable[[], "Faults"]


class InvalidFaults(ValueError):
    """A fault flag value that cannot be applied; the message says why."""


class WatchError(Exception):
    """Consul answered the blocking query with something other than the key or a 404."""


# Consul unreachable, slow, or answering what is not a blocking query's answer: retried.
_WATCH_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, WatchError)


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    methods: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0

    def applies_to_method(self, method: str) -> bool:
        """Whether the flags cover gRPC `method` ("/pkg.Service/Method" or its short name)."""
        if not self.active or rpc.is_infrastructure(method):
            return False
        return not self.methods or rpc.short_name(method) in self.methods

    def applies_to_path(self, path: str) -> bool:
        """Whether the flags cover an HTTP request for `path` (prefixes end at a "/")."""
        if not self.active:
            return False
        return not self.methods or any(_path_has_prefix(path, p) for p in self.methods)


NO_FAULTS = Faults()


@dataclass(frozen=True)
class Decision:
    """What to do to one call: wait `delay_s`, then fail if `fail`."""

    delay_s: float
    fail: bool


def parse_faults(raw: str | bytes | None) -> Faults:
    """The flags in a KV value; None or an empty value means no faults.

    Raises InvalidFaults naming the first problem.
    """
    if raw is None or not raw.strip():
        return NO_FAULTS
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFaults(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidFaults("must be a JSON object")
    unknown = sorted(set(value) - {"error_rate", "latency_ms", "methods"})
    if unknown:
        raise InvalidFaults(f"unknown field {unknown[0]!r}")
    error_rate = _number(value, "error_rate", 0.0, 1.0)
    latency_ms = _number(value, "latency_ms", 0.0, float(MAX_LATENCY_MS))
    methods = value.get("methods")
    if methods is None:
        methods = []
    if not isinstance(methods, list) or not all(isinstance(m, str) and m for m in methods):
        raise InvalidFaults("methods must be a list of non-empty strings")
    return Faults(error_rate=error_rate, latency_ms=latency_ms, methods=tuple(methods))


def decide(faults: Faults, applies: bool, random_source: Random) -> Decision:
    """The fault for one call; `random_source` returns a float in [0, 1)."""
    if not applies:
        return Decision(0.0, False)
    fail = faults.error_rate > 0 and random_source() < faults.error_rate
    return Decision(faults.latency_ms / 1000, fail)


class FaultInterceptor(grpc.aio.ServerInterceptor):
    """Applies the current flags to each matching RPC: first the latency, then maybe the error."""

    def __init__(
        self,
        faults: FaultSource,
        *,
        random_source: Random = random.random,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._faults = faults
        self._random = random_source
        self._sleep = sleep

    async def intercept_service(
        self,
        continuation: rpc.Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> rpc.Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if rpc.is_infrastructure(method):
            return handler

        def unary_response(behavior: rpc.Behavior) -> rpc.Behavior:
            async def handle(request: Any, context: rpc.Context) -> Any:
                await self._inject(method, context)
                return await behavior(request, context)

            return handle

        def streaming_response(behavior: rpc.Behavior) -> rpc.Behavior:
            async def handle(request: Any, context: rpc.Context) -> AsyncIterator[Any]:
                await self._inject(method, context)
                async for response in rpc.iterate_responses(behavior, request, context):
                    yield response

            return handle

        return rpc.wrap_handler(
            handler, unary_response=unary_response, streaming_response=streaming_response
        )

    async def _inject(self, method: str, context: rpc.Context) -> None:
        faults = self._faults()
        decision = decide(faults, faults.applies_to_method(method), self._random)
        if decision.delay_s > 0:
            await self._sleep(decision.delay_s)
        if decision.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, INJECTED_FAULT)


def fault_middleware(
    faults: FaultSource,
    *,
    random_source: Random = random.random,
    sleep: Sleep = asyncio.sleep,
) -> Middleware:
    """aiohttp middleware with the interceptor's semantics; an injected error is a 503
    application/problem+json of type /problems/injected-fault."""

    @web.middleware
    async def inject_faults(
        request: web.Request,
        handler: Handler,
    ) -> web.StreamResponse:
        current = faults()
        decision = decide(current, current.applies_to_path(request.path), random_source)
        if decision.delay_s > 0:
            await sleep(decision.delay_s)
        if decision.fail:
            problem = Problem(
                503,
                "Service Unavailable",
                "the request failed because of an injected fault (shopmesh/faults)",
                type=INJECTED_FAULT_PROBLEM,
            )
            return problem.to_response(request.path)
        return await handler(request)

    return inject_faults


def install_fault_flags(
    app: web.Application,
    consul_http_addr: str,
    service: str,
    token: str,
    tls: ssl.SSLContext,
) -> None:
    """Watch `shopmesh/faults/<service>` (with the service's Consul `token`, the agent checked
    with `tls`) while `app` runs and apply the flags to its requests.

    Call before the application starts (it adds a middleware and a cleanup context).
    """
    watcher = FaultWatcher(consul_http_addr, service, token=token, tls=tls)
    app.middlewares.append(fault_middleware(lambda: watcher.current))

    async def watching(_app: web.Application) -> AsyncIterator[None]:
        async with watcher:
            yield

    app.cleanup_ctx.append(watching)


class FaultWatcher(AbstractAsyncContextManager["FaultWatcher"]):
    """Follows `shopmesh/faults/<service>` with blocking queries; `current` is the latest value.

    Use as `async with FaultWatcher(...) as watcher:`; the watch runs in a background task.
    """

    def __init__(
        self,
        consul_http_addr: str,
        service: str,
        *,
        token: str,
        tls: ssl.SSLContext,
        wait: str = WAIT,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.key = KEY_PREFIX + service
        self._url = f"{consul_http_addr.rstrip('/')}/v1/kv/{self.key}"
        self._headers = {TOKEN_HEADER: token}
        self._tls = tls
        self._wait = wait
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._index = 0
        self._raw: str | None = None
        self.current = NO_FAULTS
        self._in_effect = FAULT_INJECTION_ACTIVE.labels(service)
        self._in_effect.set(0)
        self._task: asyncio.Task[None] | None = None
        self._unreachable_since: float | None = None
        self._last_failure_log = -FAILURE_LOG_INTERVAL_S

    async def __aenter__(self) -> FaultWatcher:
        self._task = asyncio.create_task(self.run(), name=f"watch {self.key}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Watch until cancelled."""
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while True:
                await retry(
                    lambda: self._poll_paced(session),
                    backoff=Backoff(initial_s=BACKOFF_INITIAL_S, max_s=BACKOFF_MAX_S),
                    retryable=lambda exc: isinstance(exc, _WATCH_ERRORS),
                    on_failure=lambda failure: self._failed(failure.error, failure.retry_in_s),
                )

    async def _poll_paced(self, session: aiohttp.ClientSession) -> None:
        """`poll`, then a pause that puts MIN_REQUEST_INTERVAL_S between its start and the next."""
        started = time.monotonic()
        await self.poll(session)
        await asyncio.sleep(max(0.0, MIN_REQUEST_INTERVAL_S - (time.monotonic() - started)))

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """One blocking query: returns when the key changes or the wait ends."""
        # `stale`: the agent's server answers without a round trip to the leader (cheap, and
        # available during an election in a multi-server cluster); flags may lag by a moment.
        params = {"wait": self._wait, "stale": ""}
        if self._index > 0:
            params["index"] = str(self._index)
        async with session.get(
            self._url, params=params, headers=self._headers, ssl=self._tls
        ) as resp:
            if resp.status not in (200, 404):
                text = (await resp.text()).strip()[:200]
                raise WatchError(f"HTTP {resp.status}: {text}")
            index = _consul_index(resp.headers.get("X-Consul-Index"))
            raw = _kv_value(await resp.json()) if resp.status == 200 else None
        self._recovered()
        self._advance(index)
        self.apply(raw)

    def apply(self, raw: str | None) -> None:
        """Take `raw` (the key's value, None when missing) as the current flags."""
        if raw == self._raw:
            return
        self._raw = raw
        try:
            faults = parse_faults(raw)
        except InvalidFaults as exc:
            log.warning("invalid fault flags ignored", extra={"key": self.key, "error": str(exc)})
            faults = NO_FAULTS
        if faults != self.current:
            self.current = faults
            self._in_effect.set(1 if faults.active else 0)
            log.info(
                "fault flags changed",
                extra={
                    "key": self.key,
                    "error_rate": faults.error_rate,
                    "latency_ms": faults.latency_ms,
                    "methods": list(faults.methods),
                },
            )

    def _advance(self, index: int) -> None:
        # Consul's blocking query rules: an index that goes backwards (a restarted or
        # replaced server) starts the watch over from 0; otherwise the index sent is at
        # least 1, since a 0 would make every query return at once.
        if index < self._index:
            log.info("consul index went backwards; restarting the watch", extra={"key": self.key})
            self._index = 0
        else:
            self._index = max(index, 1)

    def _failed(self, exc: Exception, retry_in_s: float) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        self._index = 0
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
            self._last_failure_log = now
            log.warning(
                "cannot watch fault flags; keeping the last known flags",
                extra={
                    "key": self.key,
                    "error": f"{type(exc).__name__}: {exc}",
                    "retry_in_s": retry_in_s,
                    "faults_in_force": self.current.active,
                },
            )

    def _recovered(self) -> None:
        if self._unreachable_since is not None:
            log.info(
                "watching fault flags again",
                extra={
                    "key": self.key,
                    "after_s": round(time.monotonic() - self._unreachable_since, 1),
                },
            )
            self._unreachable_since = None
            self._last_failure_log = -FAILURE_LOG_INTERVAL_S


def _number(value: dict[str, Any], name: str, low: float, high: float) -> float:
    raw = value.get(name, 0)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidFaults(f"{name} must be a number")
    if not low <= raw <= high:
        raise InvalidFaults(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return float(raw)


def _consul_index(header: str | None) -> int:
    if header is None or not header.isdigit():
        raise WatchError(f"consul answered without a valid X-Consul-Index ({header!r})")
    return int(header)


def _kv_value(entries: Sequence[dict[str, Any]]) -> str | None:
    if not entries or entries[0].get("Value") is None:
        return None
    return base64.b64decode(entries[0]["Value"]).decode("utf-8", errors="replace")


def _path_has_prefix(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")
