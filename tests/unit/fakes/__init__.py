"""In-memory fakes of the service layers' seams: units of work, repositories and the clients the
use cases call, so the use cases run in unit tests without Postgres, Kafka or the mesh."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any


def in_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in an event loop of its own."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def let_the_others_run(iterations: int = 1_000) -> None:
    """Give the loop's other tasks this many turns: the fakes yield with `sleep(0)` only, so what
    they reach in that many turns does not depend on how busy the machine is."""
    for _ in range(iterations):
        await asyncio.sleep(0)
