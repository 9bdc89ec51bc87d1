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


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key_pem: str = field(repr=False)
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None = None

    @functools.cached_property
    def signer(self) -> Key:
        return jwk.construct(self.private_key_pem, self.alg)

    @functools.cached_property
    def verification_key(self) -> VerificationKey:
        return VerificationKey.from_jwk(self.public_jwk)

    def published_at(self, now: datetime) -> bool:
        """Whether the key is in the JWKS (and verifies tokens) at `now`."""
        return self.retired_at is None or now - self.retired_at < RETIRED_KEY_PUBLISHED


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
    """The key set has no active key (the database was changed by hand?)."""


class KeyRing:
    """The keys auth knows at one moment: one active (signs), some retired (verify a while)."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self.keys: dict[str, SigningKey] = {key.kid: key for key in keys}
        active = [key for key in self.keys.values() if key.retired_at is None]
        if len(active) != 1:
            raise NoActiveKey(f"expected one active signing key, found {len(active)}")
        self.active = active[0]

    def published(self, now: datetime) -> list[SigningKey]:
        """The active key first, then the recently retired ones, newest first."""
        retired = [
            key
            for key in self.keys.values()
            if key.retired_at is not None and key.published_at(now)
        ]
        retired.sort(key=lambda key: key.created_at, reverse=True)
        return [self.active, *retired]

    def jwks(self, now: datetime) -> dict[str, Any]:
        return {"keys": [dict(key.public_jwk) for key in self.published(now)]}

    def verification_key(self, kid: str, now: datetime) -> VerificationKey | None:
        key = self.keys.get(kid)
        if key is None or not key.published_at(now):
            return None
        return key.verification_key


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    return jws.sign(claims, key.signer, headers={"kid": key.kid, "typ": "JWT"}, algorithm=key.alg)


def external_claims(
    *, issuer: str, sub: str, client_id: str, scope: Sequence[str], gty: str, now: int
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
        "exp": now + EXTERNAL_TTL_S,
        "jti": str(uuid.uuid4()),
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
