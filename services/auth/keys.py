"""auth's signing keys (`KeyStore`: kept in Postgres, held in memory as a KeyRing, rotated) and
auth's own internal token for its calls to users (`ServiceToken`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from services.auth.tokens import (
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
# A new key is published this much longer than the JWKS caches and the instances' reloads
# take to see it before it signs (a slow fetch, a fetch that failed once and was retried).
PUBLISH_MARGIN_S = 30.0

Clock = Callable[[], float]


class SigningKeyRepository(Protocol):
    async def lock(self) -> None:
        """Hold the keys' lock until the unit of work ends: one instance at a time creates or
        rotates keys."""
        ...

    async def all(self) -> list[SigningKey]:
        """Every key kept (keys are deleted a day after they stop signing: a handful)."""
        ...

    async def add(self, key: SigningKey) -> None: ...

    async def schedule(self, kid: str, active_from: datetime) -> None:
        """The next key `kid` signs from `active_from` on."""
        ...

    async def delete(self, kids: Sequence[str]) -> int: ...


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


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: `kid` signs from `active_from` on, in place of `retired_kid`;
    `next_kid` is the new next key, published from now on."""

    kid: str
    active_from: datetime
    retired_kid: str
    next_kid: str


class KeyStore:
    """auth's signing keys: kept in Postgres, held in memory as a KeyRing.

    A key is published before it signs. There is always a next key in the JWKS besides the
    signing one; a rotation schedules the next key to sign once it has been published for
    `publish_lead` (every cache of the JWKS has fetched it by then: the edge keeps it
    `jwks_cache_s`, every auth instance reloads its keys every `reload_interval_s`, plus a
    margin), at once if it has been published that long already, and makes a new next key.
    Instances switch to a scheduled key by the clock, each on its own, with no message between
    them.

    The ring is reloaded every `reload_interval_s` (another instance may have rotated) and when
    a token names an unknown kid, at most once per `unknown_kid_interval_s`.
    """

    def __init__(
        self,
        database: KeysDatabase,
        *,
        jwks_cache_s: float = 60.0,
        reload_interval_s: float = 30.0,
        unknown_kid_interval_s: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self._db = database
        self._reload_interval_s = reload_interval_s
        self._unknown_kid_interval_s = unknown_kid_interval_s
        self.publish_lead = timedelta(seconds=jwks_cache_s + reload_interval_s + PUBLISH_MARGIN_S)
        self._clock = clock
        self._ring: KeyRing | None = None
        self._loaded_at = 0.0
        self._signing_kid = ""
        self._lock = asyncio.Lock()

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            raise RuntimeError("KeyStore.ensure_active_key() was not awaited")
        return self._ring

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def signing_key(self) -> SigningKey:
        """The key that signs now (switches by the clock when a scheduled key starts)."""
        key = self.ring.signing_key(self.now())
        if key.kid != self._signing_kid:
            if self._signing_kid:
                log.info("signing key changed", extra={"kid": key.kid})
            self._signing_kid = key.kid
        return key

    async def ensure_active_key(self) -> None:
        """Make a signing key (the first start) and a next key, unless there are; safe when
        instances start together. The first key signs at once: no cache has the JWKS yet."""
        async with self._db.transaction() as uow:
            await uow.signing_keys.lock()
            keys = await uow.signing_keys.all()
            now = self.now()
            if not any(key.active_from is not None for key in keys):
                first = replace(await self._new_key(now), active_from=now)
                await uow.signing_keys.add(first)
                log.info("signing key created", extra={"kid": first.kid})
            if not any(key.active_from is None for key in keys):
                following = await self._new_key(now)
                await uow.signing_keys.add(following)
                log.info("next signing key published", extra={"kid": following.kid})
        await self.reload()

    async def rotate(self) -> Rotation:
        """Schedule the next key to sign (once it has been published for `publish_lead`, at
        once if it has) and publish a new next key. The key signing now signs until then, and
        stays published for an hour after."""
        async with self._db.transaction() as uow:
            await uow.signing_keys.lock()
            now = self.now()
            ring = KeyRing(await uow.signing_keys.all())
            upcoming = ring.next_key()
            if upcoming is None:  # keys made before next keys were: none published yet
                upcoming = await self._new_key(now)
                await uow.signing_keys.add(upcoming)
            active_from = max(now, upcoming.created_at + self.publish_lead)
            await uow.signing_keys.schedule(upcoming.kid, active_from)
            following = await self._new_key(now)
            await uow.signing_keys.add(following)
            expired = ring.retired_before(now - RETIRED_KEY_KEPT, now)
            await uow.signing_keys.delete([key.kid for key in expired])
        rotation = Rotation(
            kid=upcoming.kid,
            active_from=active_from,
            retired_kid=ring.last_scheduled().kid,
            next_kid=following.kid,
        )
        log.info(
            "signing keys rotated",
            extra={
                "kid": rotation.kid,
                "active_from": active_from.isoformat(),
                "retired_kid": rotation.retired_kid,
                "next_kid": rotation.next_kid,
            },
        )
        await self.reload()
        return rotation

    async def _new_key(self, now: datetime) -> SigningKey:
        return await asyncio.to_thread(generate_signing_key, now)

    async def reload(self) -> None:
        self._ring = KeyRing(await self._db.signing_keys.all())
        self._loaded_at = self._clock()
        self.signing_key()

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
        return sign(claims, self.signing_key())


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
        active = self._keys.signing_key().kid
        if now >= self._exp - self._renew_before_s or active != self._kid:
            claims = internal_claims(sub=SERVICE_SUBJECT, roles=[SERVICE_ROLE], now=now)
            self._token = self._keys.sign(claims)
            self._exp = claims["exp"]
            self._kid = active
        return self._token
