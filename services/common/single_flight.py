"""One call in flight per key: callers that ask for a key while its call runs share its result.

A burst of requests carrying the same new token (a client's first requests, spread over several
Envoy workers and listeners) would otherwise each do the same expensive work — verify, ask
users, sign — at once, and pile up behind each other on a busy process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`call()`'s result, or the result of the call already running for `key`. Its error
        reaches every caller that shared it. A caller cancelled while it waits does not cancel
        the call the others wait for."""
        running = self._calls.get(key)
        if running is None:
            running = asyncio.ensure_future(call())
            self._calls[key] = running
            running.add_done_callback(lambda _: self._calls.pop(key, None))
        return await asyncio.shield(running)

    def __len__(self) -> int:
        return len(self._calls)
