"""Jaeger v2: its config, generated from the topology, and its process.

One Jaeger v2 binary (an OpenTelemetry Collector build) is receiver, store and query service
at once. Traces live in memory only: a restart of the `jaeger` process forgets them, which
suits a local demo and needs no database. Every listener is on the placement's listen address
for Jaeger, and every port it opens is in the topology's `jaeger.ports`.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from mesh.placement import JAEGER, NativePlacement, Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology

STORE = "memstore"


def config(topology: Topology, placement: Placement) -> dict:
    host = placement.listen(JAEGER)
    ports = topology.jaeger.ports
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "basic", "readers": [{"pull": {"exporter": {
                    "prometheus": {"host": host, "port": ports.metrics}}}}]},
                "logs": {"level": "warn"},
            },
        },
        "extensions": {
            "jaeger_storage": {
                "backends": {STORE: {"memory": {"max_traces": topology.jaeger.max_traces}}}
            },
            "jaeger_query": {
                "storage": {"traces": STORE},
                # Jaeger's own query spans would crowd the shop's services in the UI.
                "enable_tracing": False,
                "http": {"endpoint": f"{host}:{ports.ui}"},
                "grpc": {"endpoint": f"{host}:{ports.query_grpc}"},
            },
            "healthcheckv2": {
                "use_v2": True,
                "http": {"endpoint": f"{host}:{ports.health}"},
                "grpc": {"endpoint": f"{host}:{ports.health_grpc}", "transport": "tcp"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{host}:{ports.otlp_grpc}"},
                    "http": {"endpoint": f"{host}:{ports.otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
    }  # fmt: skip


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
        ports=tuple(vars(ports).values()),
        before_start=write_config,
        ready=ready,
        stop_timeout=10,
    )
