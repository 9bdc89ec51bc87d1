"""The one retry mechanism: a call retried with backoff until success, a final error or a
deadline."""

import asyncio

import pytest

from services.common.retry import Backoff, retry


class Flaky:
    """Raises `error` `failures` times, then answers "ok"."""

    def __init__(self, failures, error=None):
        self.failures = failures
        self.error = error or ConnectionError("refused")
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def run(call, **options):
    failures = []
    options.setdefault("backoff", Backoff(initial_s=0.001, max_s=0.001))
    options.setdefault("retryable", lambda exc: isinstance(exc, ConnectionError))

    async def go():
        return await retry(call, on_failure=failures.append, **options)

    return asyncio.run(go()), failures


def test_a_call_is_retried_until_it_succeeds_each_failure_reported():
    call = Flaky(2)
    result, failures = run(call)
    assert (result, call.calls) == ("ok", 3)
    assert [(f.attempt, f.retry_in_s) for f in failures] == [(1, 0.001), (2, 0.001)]


def test_an_error_that_is_not_retryable_is_raised_at_once():
    call = Flaky(5, ValueError("bad"))
    with pytest.raises(ValueError):
        run(call)
    assert call.calls == 1


def test_the_delays_are_the_backoffs():
    slept = []

    async def sleep(delay):
        slept.append(delay)

    run(Flaky(4), backoff=Backoff(initial_s=0.2, max_s=0.5), sleep=sleep)
    assert slept == [0.2, 0.4, 0.5, 0.5]


def test_at_the_deadline_the_last_attempt_is_made_and_its_error_raised():
    call = Flaky(1000)
    with pytest.raises(ConnectionError):
        run(call, backoff=Backoff(initial_s=0.02, max_s=0.02), deadline_s=0.1)
    assert 3 <= call.calls <= 7


def test_the_failure_that_ends_the_retries_says_no_retry_comes():
    failures = []

    async def go():
        await retry(
            Flaky(1000),
            backoff=Backoff(initial_s=0.01, max_s=0.01),
            retryable=lambda exc: True,
            on_failure=failures.append,
            deadline_s=0.05,
        )

    with pytest.raises(ConnectionError):
        asyncio.run(go())
    assert failures[-1].retry_in_s == 0.0
    assert all(failure.retry_in_s > 0 for failure in failures[:-1])


def test_without_an_attempt_at_the_deadline_no_wait_ends_past_it():
    slept = []

    async def sleep(delay):
        slept.append(delay)
        await asyncio.sleep(delay)

    call = Flaky(1000)
    with pytest.raises(ConnectionError):
        run(
            call,
            backoff=Backoff(initial_s=0.04, max_s=0.04),
            deadline_s=0.1,
            attempt_at_deadline=False,
            sleep=sleep,
        )
    assert sum(slept) < 0.1
    assert call.calls == len(slept) + 1
