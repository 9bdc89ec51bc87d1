"""Jaeger v2: its config, generated from the topology and a placement.

One Jaeger v2 binary (an OpenTelemetry Collector build) is receiver, store and query service
at once. Traces live in memory only: a restart forgets them, which suits a local demo and
needs no database. Every listener is on the placement's listen address for Jaeger, and every
port it opens is in the topology's `jaeger.ports`.
"""

from __future__ import annotations

from typing import Any

from mesh.placement import JAEGER, Placement
from mesh.topology import Topology

STORE = "memstore"


def config(topology: Topology, placement: Placement) -> dict[str, Any]:
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
