from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.grpc_client import call_with_retries


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


class FlakyRpc:
    def __init__(self, failures: list[grpc.StatusCode]) -> None:
        self.failures = list(failures)
        self.timeouts: list[float] = []

    async def __call__(self, request: str, *, timeout: float, metadata=None) -> str:
        self.timeouts.append(timeout)
        if self.failures:
            raise rpc_error(self.failures.pop(0))
        return f"ok:{request}"


def test_unavailable_is_retried_until_the_call_succeeds() -> None:
    rpc = FlakyRpc([grpc.StatusCode.UNAVAILABLE] * 3)
    result = asyncio.run(call_with_retries(rpc, "r", budget_s=2.0, initial_backoff_s=0.001))
    assert result == "ok:r"
    assert len(rpc.timeouts) == 4


def test_every_attempt_gets_only_what_remains_of_the_one_deadline() -> None:
    rpc = FlakyRpc([grpc.StatusCode.UNAVAILABLE] * 2)
    asyncio.run(call_with_retries(rpc, "r", budget_s=1.0, initial_backoff_s=0.01))
    assert all(t <= 1.0 for t in rpc.timeouts)
    assert rpc.timeouts == sorted(rpc.timeouts, reverse=True)


def test_non_retryable_codes_fail_at_once() -> None:
    rpc = FlakyRpc([grpc.StatusCode.INVALID_ARGUMENT])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(call_with_retries(rpc, "r", budget_s=1.0))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(rpc.timeouts) == 1


def test_retries_stop_when_the_budget_is_spent() -> None:
    rpc = FlakyRpc([grpc.StatusCode.UNAVAILABLE] * 1000)
    with pytest.raises(grpc.aio.AioRpcError):
        asyncio.run(
            call_with_retries(rpc, "r", budget_s=0.3, initial_backoff_s=0.02, max_backoff_s=0.05)
        )
    assert 2 <= len(rpc.timeouts) < 50
