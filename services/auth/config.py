"""Settings of auth beyond the common ServiceSettings, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.config import ConfigError


@dataclass(frozen=True)
class AuthSettings:
    # The external tokens' `iss` and the base of the discovery URLs, e.g.
    # https://127.0.0.1:8443/auth (no trailing slash).
    issuer: str
    # The JSON file of seeded credentials the runtime writes (never committed).
    seed_file: Path

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
        return cls(issuer=issuer, seed_file=Path(seed_file))
