"""What users last said of each user, so that a new exchange for a user auth already asked about
needs no call to users.

A user's roles are set when users creates the user and never change (users has no call that
changes them); the one change is a block, which auth hears of from the UserBlocked events and
which `forget` applies. So an answer stays good for as long as a cached exchange does: it is due
for a new question to users once `recheck_s` have passed since both the answer and the last time
the block events were known to be all handled (the exchange cache's rule, services/auth/cache.py),
and never later than `max_age_s` after the answer. The map is bounded: the least recently used
user goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.auth.cache import DEFAULT_MAX_ENTRIES, DEFAULT_RECHECK_S, due_for_recheck
from services.auth.clients import UserInfo
from services.auth.tokens import INTERNAL_TTL_S

# An internal token's life. A user with steady traffic has each token exchanged again every 3-5
# minutes, so most of those exchanges find the answer here. It also bounds how long a block that
# users has not published as an event yet (its outbox relay stalled) goes unseen: auth asks users
# again at most this long after its last answer.
DEFAULT_MAX_AGE_S = float(INTERNAL_TTL_S)


@dataclass(frozen=True)
class _Answer:
    user: UserInfo
    answered_at: float


class KnownUsers:
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        recheck_s: float = DEFAULT_RECHECK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._recheck_s = recheck_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, user_id: str, blocks_current_at: float | None) -> UserInfo | None:
        """users' last answer about `user_id` while it may stand in for a new one, else None.
        `blocks_current_at`: when every block event published so far had been handled."""
        answer = self._answers.get(user_id)
        if answer is None:
            return None
        now = self._clock()
        if now - answer.answered_at >= self._max_age_s:
            del self._answers[user_id]
            return None
        if due_for_recheck(answer.answered_at, blocks_current_at, now, self._recheck_s):
            return None
        self._answers.move_to_end(user_id)
        return answer.user

    def put(self, user: UserInfo) -> None:
        """Remember users' answer, just received; a blocked user is not remembered."""
        self._answers.pop(user.id, None)
        if user.blocked:
            return
        self._answers[user.id] = _Answer(user, self._clock())
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._answers.pop(user_id, None)
