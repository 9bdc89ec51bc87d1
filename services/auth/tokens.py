"""Signing keys and the two token shapes auth issues. Plain Python: no I/O, clocks passed in.

External access token (what clients hold; the edge's jwt_authn checks it):
    iss = SHOPMESH_AUTH_ISSUER, aud "shopmesh-api", sub, client_id, scope, gty, iat, nbf,
    exp = iat + 15 min, jti; header kid.
Internal token (the RFC 8693 exchange result; every service checks it):
    iss "shopmesh-auth", aud "shopmesh-internal", sub, roles, iat, nbf,
    exp = iat + 5 min (never after the external token's exp), jti; header kid.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jws
from jose.backends.base import Key

from services.common.auth.jwt import INTERNAL_AUDIENCE, INTERNAL_ISSUER, VerificationKey

EXTERNAL_AUDIENCE = "shopmesh-api"
EXTERNAL_TTL_S = 15 * 60
INTERNAL_TTL_S = 5 * 60
# An internal token lives up to this much less than INTERNAL_TTL_S, at random: tokens exchanged
# together (a burst of new users, an edge's cold cache) would otherwise all expire, and all be
# exchanged again, in the same second, every INTERNAL_TTL_S (the edge's cache is capped by it).
INTERNAL_TTL_SPREAD_S = 60
SIGNING_ALG = "RS256"
RSA_BITS = 2048
# A retired key stays in the JWKS (and verifies) this long, so every token it signed can
# still be checked until it expires, and caches that fetched the JWKS before a rotation are
# not surprised.
RETIRED_KEY_PUBLISHED = timedelta(hours=1)

# `gty`: how an external token was obtained; tells the exchange where the roles come from.
GTY_PASSWORD = "password"
GTY_CLIENT_CREDENTIALS = "client_credentials"
# A user signed in through the authorization code flow (services/auth/sign_in.py).
GTY_AUTHORIZATION_CODE = "authorization_code"


@dataclass(frozen=True)
class SigningKey:
    """A key pair. It is published (in the JWKS, and verifies) from `created_at`; it signs from
    `active_from` (None: the next key, not scheduled yet) until the next scheduled key starts,
    and stays published RETIRED_KEY_PUBLISHED after that."""

    kid: str
    alg: str
    private_key_pem: str = field(repr=False)
    public_jwk: dict[str, Any]
    created_at: datetime
    active_from: datetime | None = None

    @functools.cached_property
    def signer(self) -> Key:
        return jwk.construct(self.private_key_pem, self.alg)

    @functools.cached_property
    def verification_key(self) -> VerificationKey:
        return VerificationKey.from_jwk(self.public_jwk)


def generate_signing_key(now: datetime) -> SigningKey:
    """A new RSA 2048 key; its kid is the RFC 7638 thumbprint of its public JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = jwk.construct(pem, SIGNING_ALG).public_key().to_dict()
    kid = jwk_thumbprint(public)
    public_jwk = {"kty": "RSA", "use": "sig", "alg": SIGNING_ALG, "kid": kid}
    public_jwk |= {"n": public["n"], "e": public["e"]}
    return SigningKey(
        kid=kid, alg=SIGNING_ALG, private_key_pem=pem, public_jwk=public_jwk, created_at=now
    )


def jwk_thumbprint(public: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    required = {name: public[name] for name in ("e", "kty", "n")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


class NoActiveKey(Exception):
    """No key signs at the time asked (an empty table, or one changed by hand?)."""


class KeyRing:
    """The keys auth knows at one moment, and which of them signs, is published and verifies
    at any time: the scheduled keys (`active_from` set) sign one after another; the next key
    (`active_from` None) is published, waiting for a rotation to schedule it."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self.keys: dict[str, SigningKey] = {key.kid: key for key in keys}
        self._schedule = sorted(
            (key for key in self.keys.values() if key.active_from is not None),
            key=lambda key: (key.active_from, key.created_at),
        )
        if not self._schedule:
            raise NoActiveKey("no signing key is scheduled")

    def signing_key(self, now: datetime) -> SigningKey:
        """The key that signs at `now`: the latest scheduled to start at or before it (the
        first scheduled one on a clock behind the clock of the instance that made it)."""
        current = self._schedule[0]
        for key in self._schedule:
            if key.active_from is not None and key.active_from <= now:
                current = key
        return current

    def last_scheduled(self) -> SigningKey:
        """The key that signs once every scheduled key has started."""
        return self._schedule[-1]

    def next_key(self) -> SigningKey | None:
        """The newest key waiting to be scheduled."""
        waiting = [key for key in self.keys.values() if key.active_from is None]
        return max(waiting, key=lambda key: key.created_at, default=None)

    def retired_at(self, key: SigningKey, now: datetime) -> datetime | None:
        """When `key` stopped signing (the next scheduled key started), if it has by `now`."""
        if key.active_from is None:
            return None
        position = self._schedule.index(key)
        if position + 1 == len(self._schedule):
            return None
        successor = self._schedule[position + 1].active_from
        return successor if successor is not None and successor <= now else None

    def is_published(self, key: SigningKey, now: datetime) -> bool:
        """Whether `key` is in the JWKS (and verifies tokens) at `now`."""
        retired = self.retired_at(key, now)
        return key.created_at <= now and (retired is None or now - retired < RETIRED_KEY_PUBLISHED)

    def published(self, now: datetime) -> list[SigningKey]:
        """The signing key first, then the keys that will sign (soonest first, the unscheduled
        next key last), then the retired ones still published (newest first)."""
        active = self.signing_key(now)
        coming = [
            key for key in self._schedule if key.active_from is not None and key.active_from > now
        ]
        waiting = sorted(
            (key for key in self.keys.values() if key.active_from is None),
            key=lambda key: key.created_at,
        )
        retired = [
            key
            for key in reversed(self._schedule)
            if key.kid != active.kid
            and key.active_from is not None
            and key.active_from <= now
            and self.is_published(key, now)
        ]
        return [key for key in [active, *coming, *waiting, *retired] if self.is_published(key, now)]

    def retired_before(self, cutoff: datetime, now: datetime) -> list[SigningKey]:
        """The keys that stopped signing before `cutoff`."""
        retired = ((key, self.retired_at(key, now)) for key in self._schedule)
        return [key for key, at in retired if at is not None and at < cutoff]

    def jwks(self, now: datetime) -> dict[str, Any]:
        return {"keys": [dict(key.public_jwk) for key in self.published(now)]}

    def verification_key(self, kid: str, now: datetime) -> VerificationKey | None:
        key = self.keys.get(kid)
        if key is None or not self.is_published(key, now):
            return None
        return key.verification_key


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    return jws.sign(claims, key.signer, headers={"kid": key.kid, "typ": "JWT"}, algorithm=key.alg)


def external_claims(
    *,
    issuer: str,
    sub: str,
    client_id: str,
    scope: Sequence[str],
    gty: str,
    now: int,
    ttl_s: int = EXTERNAL_TTL_S,
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "aud": EXTERNAL_AUDIENCE,
        "sub": sub,
        "client_id": client_id,
        "scope": " ".join(scope),
        "gty": gty,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }


def id_token_claims(
    *, issuer: str, sub: str, client_id: str, nonce: str, auth_time: int, now: int, ttl_s: int
) -> dict[str, Any]:
    """An OIDC ID token's claims (OIDC Core §2): for the client (`aud`), not for APIs."""
    return {
        "iss": issuer,
        "sub": sub,
        "aud": client_id,
        "nonce": nonce,
        "auth_time": auth_time,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }


def internal_claims(
    *, sub: str, roles: Iterable[str], now: int, not_after: int | None = None
) -> dict[str, Any]:
    """Claims of an internal token; `not_after` caps exp (the external token's own exp)."""
    exp = now + INTERNAL_TTL_S - random.randrange(INTERNAL_TTL_SPREAD_S + 1)
    if not_after is not None:
        exp = min(exp, not_after)
    return {
        "iss": INTERNAL_ISSUER,
        "aud": INTERNAL_AUDIENCE,
        "sub": sub,
        "roles": sorted(set(roles)),
        "iat": now,
        "nbf": now,
        "exp": exp,
        "jti": str(uuid.uuid4()),
    }
