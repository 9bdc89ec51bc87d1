"""The ext_authz exchange cache: external token -> internal token, per token.

Keys are the SHA-256 of the external token (the token itself is never kept as a key). An
entry is served until `margin_s` before the internal token's expiry (never later than the
external token's: the internal exp is capped by it). The cache is bounded: the least recently
used entry goes first. `invalidate_user` drops every entry of a subject (a blocked user), and
an entry of a user is due for a re-check of the user's status once `recheck_s` have passed
since both its last check and the last time the block events were known to be all handled.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MAX_ENTRIES = 10_000
# An entry is served only while its internal token has this long left: the edge keeps what auth
# gives it for up to a minute, or until shortly before it expires while it hears of blocks
# (and past that while it refreshes), so an entry near its end
# would make the edge ask again within seconds, and entries made together would all be asked
# for again together.
DEFAULT_MARGIN_S = 120.0
DEFAULT_RECHECK_S = 30.0


@dataclass
class CachedExchange:
    internal_token: str = field(repr=False)
    sub: str
    # True for users (whose blocked status is re-checked), False for machine clients.
    is_user: bool
    # Epoch seconds: the internal token's exp.
    expires_at: float
    checked_at: float


def due_for_recheck(
    checked_at: float, blocks_current_at: float | None, now: float, recheck_s: float
) -> bool:
    """Whether what users said of a user at `checked_at` needs asking again: `recheck_s` have
    passed since then and since `blocks_current_at`, when every block event published so far
    had been handled (None when never)."""
    return now - max(checked_at, blocks_current_at or checked_at) >= recheck_s


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ExchangeCache:
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        margin_s: float = DEFAULT_MARGIN_S,
        recheck_s: float = DEFAULT_RECHECK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: OrderedDict[bytes, CachedExchange] = OrderedDict()
        self._by_sub: dict[str, set[bytes]] = {}
        self._max_entries = max_entries
        self._margin_s = margin_s
        self._recheck_s = recheck_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> CachedExchange | None:
        key = token_key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at - self._margin_s:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, token: str, entry: CachedExchange) -> None:
        """Remember an exchange, unless it is already too close to its expiry to be worth it."""
        if self._clock() >= entry.expires_at - self._margin_s:
            return
        key = token_key(token)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self._by_sub.setdefault(entry.sub, set()).add(key)
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    def needs_recheck(self, entry: CachedExchange, blocks_current_at: float | None = None) -> bool:
        """`blocks_current_at`: when every block event published so far had been handled (each
        one invalidates its user's entries), None when never."""
        return entry.is_user and due_for_recheck(
            entry.checked_at, blocks_current_at, self._clock(), self._recheck_s
        )

    def checked(self, entry: CachedExchange) -> None:
        entry.checked_at = self._clock()

    def invalidate_user(self, user_id: str) -> int:
        """Drop every cached exchange of `user_id`; the number dropped."""
        keys = self._by_sub.pop(user_id, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        keys = self._by_sub.get(entry.sub)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_sub[entry.sub]
