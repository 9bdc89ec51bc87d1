"""Password and client-secret hashes: scrypt with a per-secret random salt.

A hash is stored as `scrypt$<n>$<r>$<p>$<salt, base64>$<digest, base64>`, so the cost can be
raised later without invalidating what is stored. Comparison is constant-time, and checking a
name that has no hash costs the same as checking a wrong password (`verify(None, ...)`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
DIGEST_BYTES = 32
MAX_SECRET_BYTES = 1024


def hash_secret(secret: str, *, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret, salt, n, r, p)
    return "$".join((SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify(stored: str | None, secret: str) -> bool:
    """Whether `secret` matches `stored`; with `stored` None the work is done and False returned."""
    if stored is None:
        _check(_dummy_hash(), secret)
        return False
    return _check(stored, secret)


@functools.cache
def _dummy_hash() -> str:
    """Checked when the name is unknown, so the time taken does not reveal which names exist."""
    return hash_secret(secrets.token_urlsafe(16))


def _check(stored: str, secret: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    encoded = secret.encode("utf-8")
    if len(encoded) > MAX_SECRET_BYTES:
        raise ValueError("secret too long")
    return hashlib.scrypt(encoded, salt=salt, n=n, r=r, p=p, dklen=DIGEST_BYTES, maxmem=64 << 20)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
