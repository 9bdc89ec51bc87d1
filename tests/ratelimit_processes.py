"""Redis and the edge's rate-limit service as real processes for tests that run without the mesh:
the runtime's own process specs, on free ports (never the topology's: a mesh may be running), in
a temporary state dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from mesh.placement import NativePlacement
from mesh.runtime import process, ratelimit
from mesh.runtime.paths import StateDir, cache_dir
from mesh.runtime.ports import free_port
from mesh.runtime.process import ProcessSpec
from mesh.runtime.provision import RATELIMIT, REDIS, Component
from mesh.topology import RateLimitServicePorts, Topology


def service_ports() -> RateLimitServicePorts:
    return RateLimitServicePorts(*(free_port() for _ in range(4)))


def on_free_ports(topology: Topology) -> Topology:
    return replace(topology, redis_port=free_port(), ratelimit_ports=service_ports())


def binaries(component: Component) -> dict[str, Path]:
    found = component.binaries(cache_dir())
    missing = [str(path) for path in found.values() if not path.exists()]
    assert not missing, f"{missing} missing: run `mesh install`"
    return found


@contextmanager
def rate_limit_service(topology: Topology, state: StateDir) -> Iterator[Callable[..., None]]:
    """Redis and the service running; yields `start(spec)` for more processes, all of which
    are stopped at the end."""
    started: list[str] = []

    def start(spec: ProcessSpec) -> None:
        started.append(spec.name)
        process.start(state, spec)
        process.wait_ready(state, spec)

    try:
        placement = NativePlacement.of(topology)
        start(ratelimit.redis_spec(topology, placement, state, binaries(REDIS)))
        start(ratelimit.service_spec(topology, placement, state, binaries(RATELIMIT)))
        yield start
    finally:
        for name in reversed(started):
            process.stop(state, name, timeout=5)
