"""Every process runs its asyncio code on uvloop: libuv's event loop, a drop-in for asyncio's
whose per-callback and per-socket overhead is a fraction of it (what a busy service pays on every
request, measured in docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on uvloop."""
    return uvloop.run(main)
