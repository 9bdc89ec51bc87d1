"""The brute-force limit on the password grant: failed logins counted per username and per
client address, in fixed windows that start at a key's first failure.

Within `window_s` of a key's first counted failure, at most `per_user` (a username) or
`per_address` (a client address) failed logins are let through to the password check; after
that every attempt of that username, or from that address, is refused with TooManyFailedLogins
until the window ends, the right password included. A failure is a wrong password or an
unknown username (the two are not told apart, here either). Successes, blocked users, and
attempts that could not be checked (users or the database down) count nothing.

Where the counts live: the `login_attempts` table of auth's own database, shared by every auth
instance (services/auth/README.md says why not Redis). Each attempt is counted *before* its
password is checked, in one atomic statement that also says whether the key is over its limit,
and taken back unless it failed: a burst of concurrent guesses cannot all pass a check made
before any of them failed, and two instances cannot both let the last allowed guess through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


class Scope(StrEnum):
    USER = "user"
    ADDRESS = "address"


@dataclass(frozen=True)
class LoginLimitSettings:
    """The limits; auth's defaults where the deployment sets none (the native mesh sets its
    own in mesh/topology.yaml's `auth.login_limits`)."""

    window_s: int = 900
    per_user: int = 10
    per_address: int = 100

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_s)

    def limit(self, scope: Scope) -> int:
        return self.per_user if scope is Scope.USER else self.per_address


@dataclass(frozen=True)
class AttemptKey:
    scope: Scope
    key: str


@dataclass(frozen=True)
class Count:
    """A key's attempts in its current window (failures and attempts in flight), this one
    included."""

    key: AttemptKey
    window_start: datetime
    attempts: int


class TooManyFailedLogins(Exception):
    """Over a limit: no attempt for this username or from this address until the window ends."""

    def __init__(self, retry_after_s: int, scope: Scope) -> None:
        super().__init__(f"too many failed logins for this {scope.value}")
        self.retry_after_s = retry_after_s
        self.scope = scope


class LoginAttemptRepository(Protocol):
    async def count(
        self, keys: Sequence[AttemptKey], now: datetime, window: timedelta
    ) -> list[Count]:
        """Count one attempt for each key, atomically: in the key's window if it started less
        than `window` before `now`, else in a new window starting `now`. The new counts."""
        ...

    async def uncount(self, counts: Sequence[Count]) -> None:
        """Take back one attempt of each count, if its window is still the one counted in."""
        ...

    async def prune(self, before: datetime) -> int:
        """Forget windows that started before `before` (over: they limit nothing)."""
        ...


def over_limit(
    counts: Sequence[Count], settings: LoginLimitSettings, now: datetime
) -> TooManyFailedLogins | None:
    """The refusal for the count over its limit whose window ends last, or None."""
    refusals = [
        TooManyFailedLogins(
            max(1, math.ceil((count.window_start + settings.window - now).total_seconds())),
            count.key.scope,
        )
        for count in counts
        if count.attempts > settings.limit(count.key.scope)
    ]
    return max(refusals, key=lambda refusal: refusal.retry_after_s, default=None)


def attempt_keys(username: str, client_address: str) -> list[AttemptKey]:
    return [AttemptKey(Scope.USER, username), AttemptKey(Scope.ADDRESS, client_address)]


class LoginAttempt:
    """One password-grant attempt, counted: `failed()` keeps it counted, `close()` takes it back
    unless it failed."""

    def __init__(self, repository: LoginAttemptRepository, counts: list[Count]) -> None:
        self._repository = repository
        self._counts = counts
        self._failed = False

    def failed(self) -> None:
        self._failed = True

    async def close(self) -> None:
        if not self._failed:
            await self._repository.uncount(self._counts)


class LoginLimiter:
    def __init__(
        self,
        repository: LoginAttemptRepository,
        settings: LoginLimitSettings,
        now: Callable[[], datetime],
    ) -> None:
        self._repository = repository
        self.settings = settings
        self._now = now

    async def attempt(self, username: str, client_address: str) -> LoginAttempt:
        """Count an attempt of `username` from `client_address`; TooManyFailedLogins (with the
        attempt taken back: it checked nothing) when either is over its limit."""
        now = self._now()
        counts = await self._repository.count(
            attempt_keys(username, client_address), now, self.settings.window
        )
        refusal = over_limit(counts, self.settings, now)
        if refusal is not None:
            await self._repository.uncount(counts)
            raise refusal
        return LoginAttempt(self._repository, counts)

    async def prune(self) -> int:
        return await self._repository.prune(self._now() - self.settings.window)
