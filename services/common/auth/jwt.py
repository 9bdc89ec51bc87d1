"""Verifying a JWT: `verify_jwt` is the one implementation of the checks, also used by auth for
external tokens; `verify_internal` checks an internal token and names its Principal.

An explicit algorithm allow-list (RS256, ES256) checked against the header before any key is
tried, the key chosen by `kid` and bound to its own algorithm, then issuer, audience, exp, nbf
and iat with a small leeway. Header fields that point at other keys (jku, x5u, jwk) are never
followed; a `crit` header is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError

from services.common.auth.principal import Principal, Unauthenticated

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256"})
INTERNAL_ISSUER = "shopmesh-auth"
INTERNAL_AUDIENCE = "shopmesh-internal"
LEEWAY_S = 30
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class VerificationKey:
    """A public key usable for exactly one algorithm."""

    kid: str
    alg: str
    key: Key = field(repr=False, compare=False)

    @classmethod
    def from_jwk(cls, data: Mapping[str, Any]) -> VerificationKey:
        """The key of one JWK; ValueError if it has no kid or an algorithm not allowed."""
        kid = data.get("kid")
        alg = data.get("alg")
        if not isinstance(kid, str) or not kid:
            raise ValueError("JWK without a kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise ValueError(f"JWK {kid!r} has algorithm {alg!r}, not one of the allowed")
        if data.get("use", "sig") != "sig":
            raise ValueError(f"JWK {kid!r} is not a signing key")
        expected_kty = "RSA" if alg == "RS256" else "EC"
        if data.get("kty") != expected_kty or "d" in data:
            raise ValueError(f"JWK {kid!r} is not a public {expected_kty} key")
        try:
            key = jwk.construct(dict(data), alg)
        except JOSEError as exc:
            raise ValueError(f"JWK {kid!r} is not a valid key: {exc}") from None
        return cls(kid=kid, alg=alg, key=key)


class KeySource(Protocol):
    """Where verification keys come from (auth's JWKS, or auth's own key ring)."""

    async def key(self, kid: str) -> VerificationKey | None: ...


async def verify_jwt(
    token: str,
    keys: KeySource,
    *,
    issuer: str,
    audience: str,
    leeway_s: int = LEEWAY_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of `token` once every check passes; Unauthenticated otherwise."""
    if not token:
        raise Unauthenticated("missing token")
    # A compact JWS is ASCII; jose cannot even encode a str that holds a lone surrogate.
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2 or not token.isascii():
        raise Unauthenticated("malformed token")
    try:
        header = jws.get_unverified_header(token)
    except JOSEError:
        raise Unauthenticated("malformed token") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise Unauthenticated("token algorithm not allowed")
    if "crit" in header:
        raise Unauthenticated("token has critical header extensions")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("token has no key id")
    key = await keys.key(kid)
    if key is None:
        raise Unauthenticated("token signed by an unknown key")
    if key.alg != alg:
        raise Unauthenticated("token algorithm does not match its key")
    try:
        payload = jws.verify(token, key.key, algorithms=[key.alg])
    except JOSEError:
        raise Unauthenticated("token signature is invalid") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise Unauthenticated("malformed token") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("malformed token")
    check_claims(
        claims,
        issuer=issuer,
        audience=audience,
        leeway_s=leeway_s,
        now=time.time() if now is None else now,
    )
    return claims


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, leeway_s: int, now: float
) -> None:
    """The registered claims every shopmesh token must carry, with the right types and values."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(f"token has no valid {name}")
    if claims["exp"] <= now - leeway_s:
        raise Unauthenticated("token expired")
    if claims["nbf"] > now + leeway_s:
        raise Unauthenticated("token not yet valid")
    if claims["iat"] > now + leeway_s:
        raise Unauthenticated("token issued in the future")
    if claims.get("iss") != issuer:
        raise Unauthenticated("token issuer not accepted")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audience not in audiences:
        raise Unauthenticated("token audience not accepted")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("token has no subject")


async def verify_internal(
    token: str, keys: KeySource, *, leeway_s: int = LEEWAY_S, now: float | None = None
) -> Principal:
    """The Principal of a valid internal token; Unauthenticated(reason) otherwise."""
    claims = await verify_internal_claims(token, keys, leeway_s=leeway_s, now=now)
    return principal_of(claims, token)


async def verify_internal_claims(
    token: str, keys: KeySource, *, leeway_s: int = LEEWAY_S, now: float | None = None
) -> dict[str, Any]:
    """The claims of a valid internal token (roles checked too); Unauthenticated otherwise."""
    claims = await verify_jwt(
        token,
        keys,
        issuer=INTERNAL_ISSUER,
        audience=INTERNAL_AUDIENCE,
        leeway_s=leeway_s,
        now=now,
    )
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("token roles are malformed")
    return claims


def principal_of(claims: Mapping[str, Any], token: str) -> Principal:
    """The caller named by verified internal claims."""
    return Principal(sub=claims["sub"], roles=frozenset(claims.get("roles", [])), token=token)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # RFC 6750's b64token is ASCII; header bytes that are not UTF-8 arrive as lone surrogates.
    if scheme.lower() != "bearer" or not token or " " in token or not token.isascii():
        raise Unauthenticated("authorization is not a bearer token")
    return token
