"""Keeping a run within the edge's per-user limit without switching it off.

The rate-limit service counts a user's requests in fixed windows aligned to the clock (100 a
minute: every full minute starts afresh). A short run starts at the beginning of a half window
and ends before its end, and the two halves of a window use disjoint halves of the bench users,
so two runs in one window never spend one user's budget twice; each of its users gets
rate x duration / (users / 2) requests. A run longer than half a window starts with a full
window and spreads over all the users instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

HALVES = 2
# A run starts this long after its slot begins (the tool's and the rate-limit service's clocks
# are this machine's; the margin is for the processes to start) and ends as long before its end.
MARGIN_S = 1.0
# Of each user's budget a run plans to spend at most this share.
BUDGET_SHARE = 0.9


def longest_short_run_s(window_s: int) -> float:
    return window_s / HALVES - 3 * MARGIN_S


def is_short(duration_s: float, window_s: int) -> bool:
    return duration_s <= longest_short_run_s(window_s)


def next_start(now: float, duration_s: float, window_s: int) -> tuple[float, int | None]:
    """When the run starts, and which half of the users it uses (None: all of them)."""
    if is_short(duration_s, window_s):
        length = window_s / HALVES
        index = math.floor(now / length) + 1
        return index * length + MARGIN_S, index % HALVES
    return (math.floor(now / window_s) + 1) * window_s + MARGIN_S, None


def share(users: Sequence[str], half: int | None) -> list[str]:
    return list(users) if half is None else list(users[half::HALVES])


def _users_per_run(users: int, duration_s: float, window_s: int) -> int:
    return users // HALVES if is_short(duration_s, window_s) else users


def highest_rate(users: int, duration_s: float, limit: int, window_s: int) -> float:
    """The highest rate a run of `duration_s` can hold within every user's limit."""
    per_run = _users_per_run(users, duration_s, window_s)
    return per_run * limit * BUDGET_SHARE / duration_s


def users_needed(rate: float, duration_s: float, limit: int, window_s: int) -> int:
    per_run = math.ceil(rate * duration_s / (limit * BUDGET_SHARE))
    return per_run * HALVES if is_short(duration_s, window_s) else per_run
