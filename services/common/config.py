"""Service settings, read from `SHOPMESH_*` environment variables.

The native runtime, docker compose and the Helm chart set these variables (mesh/wiring.py);
nothing else configures a service process.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The environment does not describe a runnable service instance."""


@dataclass(frozen=True)
class Upstream:
    """A mesh upstream, reachable on `127.0.0.1:<local_bind_port>` through the sidecar."""

    name: str
    local_bind_port: int


@dataclass(frozen=True, kw_only=True)
class ProcessSettings:
    """What every shopmesh process reads: who it is, its database, its logs and its metrics."""

    service: str
    instance: str
    # Empty for a service without a database (web): its /health then probes no database.
    database_url: str = field(repr=False)
    bind_host: str = "127.0.0.1"
    log_level: str = "info"
    # Where /metrics is served for Prometheus; none without SHOPMESH_METRICS_PORT.
    metrics_port: int | None = None


def process_fields(env: Mapping[str, str], *, database: bool = True) -> dict[str, Any]:
    """The ProcessSettings fields in `env`; ConfigError for the first missing or malformed.
    Without `database` the process has none: SHOPMESH_DATABASE_URL is not read."""
    log_level = _optional(env, "SHOPMESH_LOG_LEVEL", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"SHOPMESH_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
        )
    return {
        "service": _required(env, "SHOPMESH_SERVICE"),
        "instance": _required(env, "SHOPMESH_INSTANCE"),
        "bind_host": _optional(env, "SHOPMESH_BIND_HOST", "127.0.0.1"),
        "database_url": _required(env, "SHOPMESH_DATABASE_URL") if database else "",
        "metrics_port": (
            _port(env, "SHOPMESH_METRICS_PORT") if env.get("SHOPMESH_METRICS_PORT") else None
        ),
        "log_level": log_level,
    }


@dataclass(frozen=True, kw_only=True)
class ServiceSettings(ProcessSettings):
    """A service instance's settings: a process that serves a port and registers in Consul."""

    port: int
    # The local agent's HTTP API: HTTPS only, checked with the Consul CA's certificate in
    # `consul_ca_file`.
    consul_http_addr: str
    consul_ca_file: str
    # The service's Consul ACL token (registration, its fault flags), from a file: the
    # environment names the file, never the secret.
    consul_token: str = field(repr=False)
    # The instance's Consul registration, as the mesh made it (mesh/registration.py): the
    # service registers it once it answers its health check. None where the platform registers
    # the instance itself (consul-k8s, from its pod): SHOPMESH_CONSUL_REGISTER=false.
    registration: dict[str, Any] | None
    upstreams: tuple[Upstream, ...] = ()

    def consul_tls(self) -> ssl.SSLContext:
        """What a client of the agent's HTTPS API checks the agent with: the Consul CA."""
        return ssl.create_default_context(cafile=self.consul_ca_file)

    def upstream_port(self, name: str) -> int:
        """The local port of the sidecar listener for upstream `name`."""
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream.local_bind_port
        raise ConfigError(f"SHOPMESH_UPSTREAMS has no upstream named {name!r}")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, database: bool = True
    ) -> ServiceSettings:
        """Read settings from `env` (default: the process environment); `database=False` for a
        service without one.

        Raises ConfigError naming the first variable that is missing or malformed.
        """
        source = os.environ if env is None else env
        process = process_fields(source, database=database)
        return cls(
            **process,
            port=_port(source, "SHOPMESH_PORT"),
            consul_http_addr=https_url(source, "SHOPMESH_CONSUL_HTTP_ADDR"),
            consul_ca_file=ca_file(source, "SHOPMESH_CONSUL_CA_FILE"),
            consul_token=secret_file(source, "SHOPMESH_CONSUL_TOKEN_FILE"),
            registration=(
                _registration(source, "SHOPMESH_REGISTRATION", process["instance"])
                if _flag(source, "SHOPMESH_CONSUL_REGISTER", default=True)
                else None
            ),
            upstreams=_upstreams(source, "SHOPMESH_UPSTREAMS"),
        )


def service_version() -> str:
    """The installed shopmesh distribution's version, or "unknown" when run from a checkout."""
    try:
        return metadata.version("shopmesh")
    except metadata.PackageNotFoundError:
        return "unknown"


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def _optional(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value == "true"


def _port_value(name: str, raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        port = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit():
        port = int(raw)
    else:
        raise ConfigError(f"{name} must be a TCP port number (1-65535), got {raw!r}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a TCP port number (1-65535), got {raw!r}")
    return port


def _port(env: Mapping[str, str], name: str) -> int:
    return _port_value(name, _required(env, name))


def secret_file(env: Mapping[str, str], name: str) -> str:
    """The content of the file `name` points at, stripped; it must not be empty."""
    path = _required(env, name)
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{name}: {path} is empty")
    return value


def ca_file(env: Mapping[str, str], name: str) -> str:
    """The path in `name`, of a file of PEM certificates a TLS client can trust."""
    path = _required(env, name)
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # an OSError too: first
        raise ConfigError(f"{name}: {path} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror})") from None
    return path


def http_url(env: Mapping[str, str], name: str) -> str:
    """The http(s) URL in `name`, without a trailing slash."""
    value = _required(env, name).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value


def https_url(env: Mapping[str, str], name: str) -> str:
    """The https URL in `name`, without a trailing slash."""
    value = http_url(env, name)
    if not value.startswith("https://"):
        raise ConfigError(f"{name} must be an https:// URL, got {value!r}")
    return value


def _registration(env: Mapping[str, str], name: str, instance: str) -> dict[str, Any]:
    try:
        document = json.loads(_required(env, name))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{name} must be a JSON object, a Consul service registration")
    # The instance deregisters its own id on the way out: another id would stay behind.
    if document.get("ID") != instance:
        raise ConfigError(
            f"{name} registers {document.get('ID')!r}, not this instance {instance!r}"
        )
    return document


def _upstreams(env: Mapping[str, str], name: str) -> tuple[Upstream, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{name} must be a JSON list of {{name, local_bind_port}} objects")
    upstreams = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object with name and local_bind_port")
        upstream_name = entry.get("name")
        if not isinstance(upstream_name, str) or not upstream_name:
            raise ConfigError(f"{where}.name must be a non-empty string")
        port = _port_value(f"{where}.local_bind_port", entry.get("local_bind_port"))
        upstreams.append(Upstream(name=upstream_name, local_bind_port=port))
    return tuple(upstreams)
