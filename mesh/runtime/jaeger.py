"""Jaeger v2 as a native process (its config: mesh/components/jaeger.py), and where this host
reaches its query API.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from mesh.components.jaeger import config
from mesh.go_memory import GO_ENV
from mesh.placement import JAEGER, NativePlacement, Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology


def query_url(topology: Topology, placement: Placement | None = None) -> str:
    """The query API and UI (the UI at /, the API under /api); by default the native mesh's,
    as this host reaches it."""
    host = (placement or NativePlacement.of(topology)).host(JAEGER)
    return f"http://{host}:{topology.jaeger.ports.ui}"


def server_spec(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> ProcessSpec:
    config_file = state.config / "jaeger.yaml"
    ports = topology.jaeger.ports
    health = f"http://{placement.host(JAEGER)}:{ports.health}/status"
    api = f"{query_url(topology, placement)}/api/services"

    def write_config() -> None:
        config_file.write_text(yaml.safe_dump(config(topology, placement), sort_keys=False))

    def ready() -> str | None:
        try:
            status = httpx.get(health, timeout=1.0)
            if status.status_code != 200:
                return f"health check says {status.status_code}"
            query = httpx.get(api, timeout=1.0)
        except httpx.HTTPError as exc:
            return f"not answering ({exc.__class__.__name__})"
        return None if query.status_code == 200 else f"query API says {query.status_code}"

    return ProcessSpec(
        name="jaeger",
        argv=[str(binaries["jaeger"]), f"--config={config_file}"],
        env=GO_ENV,
        ports=tuple(vars(ports).values()),
        before_start=write_config,
        ready=ready,
        stop_timeout=10,
    )
