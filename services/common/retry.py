"""The one retry mechanism of the services: capped exponential backoff, and a call retried with it.

`Backoff` says how long to wait after each failure. `retry` calls an awaitable until it
succeeds, raises an error that is not `retryable`, or its deadline passes, waiting the backoff
between attempts and telling `on_failure` about each failed attempt (that is where callers
log). Loops that do more between attempts than wait (the Kafka consumers and the outbox relay)
use `Backoff` on its own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays `initial_s`, x`factor` each failure, capped at `max_s`; `reset()` after a success.

    `jitter` (0..1) takes up to that fraction off each delay, so instances do not retry in step.
    """

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.0
    failures: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        delay = min(self.initial_s * self.factor**self.failures, self.max_s)
        self.failures += 1
        if self.jitter:
            delay -= delay * self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class Failure:
    """One failed attempt: its number (from 1), its error, and the wait before the next one
    (0 when this failure ends the retries: the error is raised next)."""

    attempt: int
    error: Exception
    retry_in_s: float


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    retryable: Callable[[Exception], bool],
    on_failure: Callable[[Failure], None] = lambda _failure: None,
    deadline_s: float | None = None,
    attempt_at_deadline: bool = True,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """`await call()` until it returns; its last error once retries end.

    An error that is not `retryable` ends them at once. Without `deadline_s` they go on until
    a success. With it, `attempt_at_deadline` chooses how they end: True, the wait before the
    deadline is cut short and one last attempt is made at it (for waiting on something that is
    starting); False, no wait that would end at or past the deadline is begun (for a call whose
    every attempt must fit the caller's budget).
    """
    loop = asyncio.get_running_loop()
    deadline = None if deadline_s is None else loop.time() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc):
                raise
            delay = backoff.next_delay()
            if deadline is not None:
                remaining = deadline - loop.time()
                if attempt_at_deadline:
                    delay = min(delay, remaining)
                    give_up = remaining <= 0
                else:
                    give_up = delay >= remaining
                if give_up:
                    on_failure(Failure(attempt, exc, 0))
                    raise
            on_failure(Failure(attempt, exc, delay))
            await sleep(delay)
