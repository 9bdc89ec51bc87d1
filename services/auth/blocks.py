"""The users blocked lately, as one auth instance learnt of them (a UserBlocked event, or users'
answer to a re-check).

The edge's token cache asks for them every few seconds (GET /auth/blocks,
mesh/runtime/token_exchange.lua) and drops those users' exchanges at once. While its answers
keep coming, the edge keeps every other exchange until shortly before the internal token
expires, instead of asking auth again for each token every minute.

An instance knows only what it handled itself since it started, and forgets a block after
`window_s`: `complete_from` says since when its list is whole. The window is longer than an
internal token lives, so an exchange made before a block has expired by the time the block is
forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.auth.tokens import INTERNAL_TTL_S

WINDOW_S = 2.0 * INTERNAL_TTL_S


class RecentBlocks:
    def __init__(self, clock: Callable[[], float] = time.time, window_s: float = WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._started_at = clock()
        # user id -> when this instance learnt of the block, oldest first.
        self._learnt_at: dict[str, float] = {}

    def add(self, user_id: str) -> None:
        self._learnt_at.pop(user_id, None)
        self._learnt_at[user_id] = self._clock()

    def __contains__(self, user_id: object) -> bool:
        """Whether this instance learnt of `user_id`'s block (blocks are never lifted)."""
        return user_id in self._learnt_at

    def users(self) -> list[str]:
        """Every user whose block this instance learnt of since `complete_from()`."""
        since = self._clock() - self._window_s
        for user_id, learnt_at in list(self._learnt_at.items()):
            if learnt_at >= since:
                break
            del self._learnt_at[user_id]
        return list(self._learnt_at)

    def complete_from(self) -> float:
        """Since when (epoch seconds) every block this instance handled is in `users()`."""
        return max(self._started_at, self._clock() - self._window_s)
