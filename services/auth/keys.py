"""auth's signing keys (`KeyStore`: kept in Postgres, held in memory as a KeyRing, rotated) and
auth's own internal token for its calls to users (`ServiceToken`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from services.auth.tokens import (
    RETIRED_KEY_PUBLISHED,
    KeyRing,
    SigningKey,
    generate_signing_key,
    internal_claims,
    sign,
)
from services.common.auth.jwt import VerificationKey

log = logging.getLogger(__name__)

SERVICE_SUBJECT = "auth"
SERVICE_ROLE = "service"
# Retired keys are deleted this long after retirement (they verify nothing by then).
RETIRED_KEY_KEPT = timedelta(days=1)

Clock = Callable[[], float]


class SigningKeyRepository(Protocol):
    async def lock(self) -> None:
        """Hold the keys' lock until the unit of work ends: one instance at a time creates or
        rotates keys."""
        ...

    async def active_kid(self) -> str | None: ...

    async def add(self, key: SigningKey) -> None: ...

    async def retire_active(self, now: datetime) -> str | None:
        """Retire the active key as of `now`; its kid, or None if there was none."""
        ...

    async def delete_retired_before(self, cutoff: datetime) -> int: ...

    async def published(self, now: datetime, keep: timedelta) -> list[SigningKey]:
        """The active key and the keys retired within `keep` of `now`."""
        ...


class KeysUnitOfWork(Protocol):
    @property
    def signing_keys(self) -> SigningKeyRepository: ...


class KeysDatabase(Protocol):
    @property
    def signing_keys(self) -> SigningKeyRepository:
        """Outside any transaction: each call on its own."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[KeysUnitOfWork]:
        """A unit of work: committed when the `async with` block ends, rolled back when it
        raises."""
        ...


class KeyStore:
    """auth's signing keys: kept in Postgres, held in memory as a KeyRing.

    The ring is reloaded every `reload_interval_s` (another instance may have rotated) and when
    a token names an unknown kid, at most once per `unknown_kid_interval_s`.
    """

    def __init__(
        self,
        database: KeysDatabase,
        *,
        reload_interval_s: float = 30.0,
        unknown_kid_interval_s: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._reload_interval_s = reload_interval_s
        self._unknown_kid_interval_s = unknown_kid_interval_s
        self._clock = clock
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            raise RuntimeError("KeyStore.ensure_active_key() was not awaited")
        return self._ring

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def ensure_active_key(self) -> None:
        """Create the first key unless one is active; safe when instances start together."""
        candidate = await asyncio.to_thread(generate_signing_key, self.now())
        async with self._db.transaction() as uow:
            await uow.signing_keys.lock()
            if await uow.signing_keys.active_kid() is None:
                await uow.signing_keys.add(candidate)
                log.info("signing key created", extra={"kid": candidate.kid})
        await self.reload()

    async def rotate(self) -> tuple[SigningKey, str | None]:
        """Make a new active key; the old one retires and stays published for an hour."""
        now = self.now()
        new_key = await asyncio.to_thread(generate_signing_key, now)
        async with self._db.transaction() as uow:
            await uow.signing_keys.lock()
            retired = await uow.signing_keys.retire_active(now)
            await uow.signing_keys.add(new_key)
            await uow.signing_keys.delete_retired_before(now - RETIRED_KEY_KEPT)
        log.info("signing keys rotated", extra={"kid": new_key.kid, "retired_kid": retired})
        await self.reload()
        return new_key, retired

    async def reload(self) -> None:
        keys = await self._db.signing_keys.published(self.now(), RETIRED_KEY_PUBLISHED)
        ring = KeyRing(keys)
        if self._ring is not None and ring.active.kid != self._ring.active.kid:
            log.info("active signing key changed", extra={"kid": ring.active.kid})
        self._ring = ring
        self._loaded_at = self._clock()

    async def run_reloads(self) -> None:
        """Reload every interval until cancelled; a failed reload keeps the current ring."""
        while True:
            await asyncio.sleep(self._reload_interval_s)
            try:
                await self.reload()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "cannot reload signing keys; keeping the current ones",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )

    async def key(self, kid: str) -> VerificationKey | None:
        """A verification key by kid (the KeySource of services.common.auth)."""
        found = self.ring.verification_key(kid, self.now())
        if found is not None:
            return found
        async with self._lock:
            if self._clock() - self._loaded_at >= self._unknown_kid_interval_s:
                try:
                    await self.reload()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning(
                        "cannot reload signing keys",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
        return self.ring.verification_key(kid, self.now())

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks(self.now())

    def sign(self, claims: dict[str, Any]) -> str:
        return sign(claims, self.ring.active)


class ServiceToken:
    """auth's own internal token (sub `auth`, role `service`) for its calls to users."""

    def __init__(
        self, keys: KeyStore, *, clock: Clock = time.time, renew_before_s: int = 60
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._renew_before_s = renew_before_s
        self._token = ""
        self._exp = 0
        self._kid = ""

    def __call__(self) -> str:
        now = int(self._clock())
        active = self._keys.ring.active.kid
        if now >= self._exp - self._renew_before_s or active != self._kid:
            claims = internal_claims(sub=SERVICE_SUBJECT, roles=[SERVICE_ROLE], now=now)
            self._token = self._keys.sign(claims)
            self._exp = claims["exp"]
            self._kid = active
        return self._token
