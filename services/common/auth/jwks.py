"""Auth's public keys (its JWKS), fetched through the service's own sidecar and cached."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from services.common.auth.jwt import VerificationKey
from services.common.config import ServiceSettings
from services.common.telemetry import client_trace_config

log = logging.getLogger(__name__)

JWKS_PATH = "/auth/jwks"

JwksFetch = Callable[[], Awaitable[Mapping[str, Any]]]


class Jwks:
    """Auth's public keys, fetched from its JWKS and cached.

    A kid not in the cache triggers one refetch, at most once per `min_refetch_interval_s` (a
    flood of made-up kids costs auth one request per interval, not one per token). A cached
    set older than `max_age_s` is refreshed in the background while the cached keys keep
    answering. A failed fetch keeps the keys already known, so a short auth outage does not
    stop verification.

    `max_age_s` matches auth's own `Cache-Control: max-age` on the JWKS (60 s), and stays below
    how long auth publishes a new signing key before signing with it
    (services/auth/README.md#signing-keys-and-rotation): a busy service has the next key before
    its first token, with no refetch on an unknown kid.
    """

    def __init__(
        self,
        url: str,
        *,
        fetch: JwksFetch | None = None,
        min_refetch_interval_s: float = 5.0,
        max_age_s: float = 60.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch or self._fetch_http
        self._min_interval = min_refetch_interval_s
        self._max_age = max_age_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._background: asyncio.Task[bool] | None = None

    @classmethod
    def for_settings(cls, settings: ServiceSettings, **kwargs: Any) -> Jwks:
        """The JWKS of auth, reached through this instance's sidecar upstream `auth`."""
        return cls(f"http://127.0.0.1:{settings.upstream_port('auth')}{JWKS_PATH}", **kwargs)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def key(self, kid: str) -> VerificationKey | None:
        found = self._keys.get(kid)
        if found is not None:
            self._refresh_if_stale()
            return found
        async with self._lock:
            found = self._keys.get(kid)
            if found is None and self._may_fetch():
                await self._refresh_locked()
                found = self._keys.get(kid)
        return found

    async def refresh(self) -> bool:
        """Fetch the key set now (ignoring the rate limit); False if it could not be fetched."""
        async with self._lock:
            return await self._refresh_locked()

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
            self._background = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None or self._clock() - self._attempted_at >= self._min_interval
        )

    def _refresh_if_stale(self) -> None:
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age
        running = self._background is not None and not self._background.done()
        if stale and not running and not self._lock.locked() and self._may_fetch():
            self._background = asyncio.create_task(self.refresh(), name="jwks refresh")

    async def _refresh_locked(self) -> bool:
        self._attempted_at = self._clock()
        try:
            document = await self._fetch()
            keys = parse_jwks(document)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning(
                "cannot fetch the JWKS; keeping the keys already known",
                extra={
                    "url": self.url,
                    "error": f"{type(exc).__name__}: {exc}",
                    "known_keys": len(self._keys),
                },
            )
            return False
        if set(keys) != set(self._keys):
            log.info("JWKS keys changed", extra={"url": self.url, "kids": sorted(keys)})
        self._keys = keys
        self._fetched_at = self._clock()
        return True

    async def _fetch_http(self) -> Mapping[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trace_configs=[client_trace_config()]
            )
        async with self._session.get(self.url) as resp:
            if resp.status != 200:
                raise ValueError(f"JWKS answered HTTP {resp.status}")
            document = await resp.json(content_type=None)
        if not isinstance(document, Mapping):
            raise ValueError("JWKS is not a JSON object")
        return document


def parse_jwks(document: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """The usable keys of a JWK set by kid; unusable entries are skipped (and logged)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no keys list")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        try:
            key = VerificationKey.from_jwk(entry)
        except ValueError as exc:
            log.warning("JWKS entry skipped", extra={"error": str(exc)})
            continue
        keys[key.kid] = key
    return keys
