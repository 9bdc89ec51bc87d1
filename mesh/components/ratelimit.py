"""The edge's global rate limits: Redis (the counters) and envoyproxy/ratelimit (the service the
edge asks over gRPC before routing), their configs generated from the topology and a placement.

Every edge listener, and every edge instance there may be, asks the one service, which counts in
the one Redis: a user's budget is the same whatever the listener or the edge a request comes
through. The limits are the topology's `edge.rate_limits`; the service counts in fixed windows
aligned to the clock. Redis keeps the counters in memory only (no RDB, no AOF): a restart forgets
the current windows, which can only let one window's worth through again. It listens on the
placement's listen address for Redis only and wants a password, generated at first start into
the state dir's secrets.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

from mesh.components.prometheus import SCRAPE_INTERVAL
from mesh.placement import RATELIMIT, REDIS, Placement
from mesh.runtime.paths import StateDir, write_private
from mesh.topology import RateLimit, Topology

# The rate-limit domain the edge's filter names, and the descriptor keys its actions send.
DOMAIN = "edge"
PER_IP_KEY = "remote_address"


PER_USER_KEY = "user"

# envoyproxy/ratelimit reads <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/config/*.yaml.
RUNTIME_SUBDIRECTORY = "ratelimit"


def _rule(key: str, limit: RateLimit) -> dict[str, Any]:
    # No `value`: every distinct value (each address, each user) gets a counter of its own.
    return {"key": key, "rate_limit": {"unit": limit.unit, "requests_per_unit": limit.requests}}


def service_config(topology: Topology) -> dict[str, Any]:
    """The service's rules for the edge's domain: per client address and per user."""
    edge = topology.edge
    return {
        "domain": DOMAIN,
        "descriptors": [
            _rule(PER_IP_KEY, edge.per_ip_limit),
            _rule(PER_USER_KEY, edge.per_user_limit),
        ],
    }


def service_config_file(state: StateDir) -> Path:
    return state.config / RUNTIME_SUBDIRECTORY / "config" / f"{DOMAIN}.yaml"


def write_service_config(topology: Topology, state: StateDir) -> None:
    path = service_config_file(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(service_config(topology), sort_keys=False))


def password_file(state: StateDir) -> Path:
    return state.secrets / "redis-password"


def redis_password(state: StateDir) -> str:
    """Generated on first use, kept owner-only in the state dir's secrets folder."""
    path = password_file(state)
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def redis_config(topology: Topology, placement: Placement, password: str, data_dir: Path) -> str:
    return "\n".join([
        f"bind {placement.listen(REDIS)}",
        f"port {topology.redis_port}",
        "protected-mode yes",
        f"requirepass {password}",
        # Counters only: nothing is worth keeping across a restart.
        'save ""',
        "appendonly no",
        f'dir "{data_dir}"',
        "daemonize no",
        'logfile ""',
        "loglevel warning",
        "",
    ])  # fmt: skip


def redis_config_file(state: StateDir) -> Path:
    return state.config / "redis.conf"


def write_redis_config(
    topology: Topology, placement: Placement, state: StateDir, data_dir: Path
) -> Path:
    """Owner-only: it carries the password."""
    path = redis_config_file(state)
    password = redis_password(state)
    write_private(path, redis_config(topology, placement, password, data_dir))
    return path


def service_env(topology: Topology, placement: Placement, state: StateDir) -> dict[str, str]:
    """The service's settings (it reads environment variables only), but the Redis password:
    natively and in compose alike. Every listener on the placement's listen address, Redis where
    the placement has it."""
    ports = topology.ratelimit_ports
    bind_host = placement.listen(RATELIMIT)
    return {
        "RUNTIME_ROOT": str(state.config),
        "RUNTIME_SUBDIRECTORY": RUNTIME_SUBDIRECTORY,
        # Watch the config directory itself, not a symlink swapped over it.
        "RUNTIME_WATCH_ROOT": "false",
        "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED": "true",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": f"{placement.host(REDIS)}:{topology.redis_port}",
        "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION": "true",
        # The edge waits 0.25 s and then lets the request through: no call should wait on a
        # stalled Redis for the default 10 s.
        "REDIS_TIMEOUT": "1s",
        "GRPC_HOST": bind_host,
        "GRPC_PORT": str(ports.grpc),
        "HOST": bind_host,
        "PORT": str(ports.http),
        "DEBUG_HOST": bind_host,
        "DEBUG_PORT": str(ports.debug),
        "USE_STATSD": "false",
        "USE_PROMETHEUS": "true",
        "PROMETHEUS_ADDR": f"{bind_host}:{ports.metrics}",
        # Counters reach /metrics as often as Prometheus scrapes it (the default is 10 s).
        "STATS_FLUSH_INTERVAL": SCRAPE_INTERVAL,
        "LOG_LEVEL": "warn",
        "LOG_FORMAT": "json",
        # One call per request through the edge, a few hundred microseconds each: one Go
        # processor and a garbage collection every 4x growth of a small heap, instead of a
        # processor per core that mostly hands work between threads (measured at 300 req/s:
        # 0.43 -> 0.33 ms of CPU per request; docs/performance.md).
        "GOMAXPROCS": "1",
        "GOGC": "400",
    }
