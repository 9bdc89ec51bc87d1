"""Settings of auth beyond the common ServiceSettings, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.auth.login_limits import LoginLimitSettings
from services.common.config import ConfigError

# The longest a cache of the JWKS keeps it where the deployment does not say (the edge's
# jwt_authn cache_duration in the native mesh: mesh/topology.yaml's edge.jwks_cache_s).
DEFAULT_JWKS_CACHE_S = 60


@dataclass(frozen=True)
class AuthSettings:
    # The external tokens' `iss` and the base of the discovery URLs, e.g.
    # https://127.0.0.1:8443/auth (no trailing slash).
    issuer: str
    # The JSON file of seeded credentials the runtime writes (never committed).
    seed_file: Path
    # The brute-force limit on the password grant (services/auth/login_limits.py).
    login_limits: LoginLimitSettings = field(default_factory=LoginLimitSettings)
    # How long the longest-lived cache of the JWKS keeps it: a new signing key is published
    # longer than this before it signs (services/auth/keys.py).
    jwks_cache_s: int = DEFAULT_JWKS_CACHE_S
    # The edge's public origins (https://127.0.0.1:8443, ...): the browser client shopmesh-web
    # is registered at each (services/auth/authorization.py). The issuer's origin by default.
    web_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        source = os.environ if env is None else env
        issuer = source.get("SHOPMESH_AUTH_ISSUER", "").strip().rstrip("/")
        if not issuer:
            raise ConfigError("SHOPMESH_AUTH_ISSUER is required but not set")
        if not issuer.startswith(("http://", "https://")):
            raise ConfigError(f"SHOPMESH_AUTH_ISSUER must be an http(s) URL, got {issuer!r}")
        seed_file = source.get("SHOPMESH_AUTH_SEED_FILE", "").strip()
        if not seed_file:
            raise ConfigError("SHOPMESH_AUTH_SEED_FILE is required but not set")
        defaults = LoginLimitSettings()
        limits = LoginLimitSettings(
            window_s=_positive(source, "SHOPMESH_AUTH_LOGIN_WINDOW_S", defaults.window_s),
            per_user=_positive(
                source, "SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_USER", defaults.per_user
            ),
            per_address=_positive(
                source, "SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", defaults.per_address
            ),
        )
        web_origins = tuple(
            origin.strip().rstrip("/")
            for origin in source.get("SHOPMESH_AUTH_WEB_ORIGINS", "").split(",")
            if origin.strip()
        ) or (_origin(issuer),)
        for origin in web_origins:
            if _origin(origin) != origin:
                raise ConfigError(
                    f"SHOPMESH_AUTH_WEB_ORIGINS holds scheme://host[:port] origins, got {origin!r}"
                )
        return cls(
            issuer=issuer,
            web_origins=web_origins,
            seed_file=Path(seed_file),
            login_limits=limits,
            jwks_cache_s=_positive(source, "SHOPMESH_AUTH_JWKS_CACHE_S", DEFAULT_JWKS_CACHE_S),
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _positive(source: Mapping[str, str], name: str, default: int) -> int:
    raw = source.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value
