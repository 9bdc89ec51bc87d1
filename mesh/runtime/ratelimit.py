"""Redis and the rate-limit service as native processes (their configs:
mesh/components/ratelimit.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from mesh.components.ratelimit import (
    redis_config_file,
    redis_password,
    service_env,
    write_redis_config,
    write_service_config,
)
from mesh.placement import RATELIMIT, REDIS, Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology


def redis_answers(host: str, port: int, password: str) -> str | None:
    """None when Redis accepts the password and answers PING with PONG, else why not (never
    naming the password)."""
    commands = _resp("AUTH", password) + _resp("PING")
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(commands)
            replies = _read_lines(sock, 2)
    except OSError as exc:
        return f"not answering ({exc.__class__.__name__})"
    if replies != [b"+OK", b"+PONG"]:
        return f"AUTH and PING answered {b' / '.join(replies)[:80]!r}"
    return None


def _resp(*args: str) -> bytes:
    """A command in RESP, the Redis protocol: an array of bulk strings."""
    out = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


def _read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buffer = b""
    while buffer.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buffer += chunk
    return buffer.split(b"\r\n")[:count]


def redis_spec(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> ProcessSpec:
    host, port = placement.host(REDIS), topology.redis_port
    config_file = redis_config_file(state)
    data_dir = state.data / "redis"

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_redis_config(topology, placement, state, data_dir)

    return ProcessSpec(
        name="redis",
        argv=[str(binaries["redis-server"]), str(config_file)],
        ports=(port,),
        before_start=write_config,
        ready=lambda: redis_answers(host, port, redis_password(state)),
        stop_timeout=10,
    )


def health_url(topology: Topology, placement: Placement) -> str:
    return f"http://{placement.host(RATELIMIT)}:{topology.ratelimit_ports.http}/healthcheck"


def service_spec(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> ProcessSpec:
    def ready() -> str | None:
        try:
            health = httpx.get(health_url(topology, placement), timeout=1.0)
        except httpx.HTTPError as exc:
            return f"not answering ({exc.__class__.__name__})"
        if health.status_code != 200 or health.text.strip() != "OK":
            return f"/healthcheck says {health.status_code} {health.text.strip()[:60]!r}"
        return None

    return ProcessSpec(
        name="ratelimit",
        argv=[str(binaries["ratelimit"])],
        env={
            **service_env(topology, placement, state),
            "REDIS_AUTH": redis_password(state),
        },
        ports=tuple(vars(topology.ratelimit_ports).values()),
        before_start=lambda: write_service_config(topology, state),
        ready=ready,
        stop_timeout=10,
    )
