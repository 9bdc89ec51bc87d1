"""Calling a gRPC upstream through the local sidecar: one deadline, bounded client retries.

The sidecar already retries connection failures and UNAVAILABLE (service-router); these client
retries add exponential backoff with jitter on top, for the cases the mesh cannot absorb
(an ejected endpoint, a circuit breaker overflow, a restart that outlasts the mesh retries).
Every attempt's timeout is what remains of the one deadline, so retries never extend it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.trace import TracerProvider

from services.common.retry import Backoff, retry

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Retryable by the gRPC spec's guidance: the request did not take effect, or is safe to repeat.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def upstream_target(port: int) -> str:
    """Upstreams are reached at the sidecar's local listener, never directly."""
    return f"127.0.0.1:{port}"


def upstream_channel(
    port: int, *, tracer_provider: TracerProvider | None = None
) -> grpc.aio.Channel:
    """A channel to the sidecar's listener for an upstream. Every call gets a CLIENT span
    whose context goes out as `traceparent` metadata, so the sidecar and the server continue
    the caller's trace (each retry is a span of its own)."""
    return grpc.aio.insecure_channel(
        upstream_target(port), interceptors=aio_client_interceptors(tracer_provider)
    )


def is_retryable(exc: BaseException, codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in codes


async def call_with_retries(
    rpc: Callable[..., Awaitable[Resp]],
    request: Req,
    *,
    budget_s: float,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 0.5,
    codes: frozenset[grpc.StatusCode] = RETRYABLE_CODES,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Resp:
    """Call a unary RPC, retrying `codes` with backoff (full jitter) within `budget_s`.

    Raises the last AioRpcError when retries are exhausted or the error is not retryable.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    return await retry(
        lambda: rpc(request, timeout=max(deadline - loop.time(), 0.001), metadata=metadata),
        backoff=Backoff(initial_s=initial_backoff_s, max_s=max_backoff_s, jitter=1.0),
        retryable=lambda exc: is_retryable(exc, codes),
        deadline_s=budget_s,
        attempt_at_deadline=False,
    )
