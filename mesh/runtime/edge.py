"""The edge gateway process: its Consul registration and how it is started.

Its Envoy config comes from edge_config.py; requests leave the edge through the edge's own
Connect sidecar (its upstream listeners on loopback), which carries them over mTLS.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from mesh.runtime import protos
from mesh.runtime.consul import ConsulClient
from mesh.runtime.edge_config import EdgeFiles, envoy_config
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import ensure_edge_certs
from mesh.topology import Topology
from services.common.consul import (
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    DEREGISTER_CRITICAL_AFTER,
    FAILURES_BEFORE_CRITICAL,
    EnvoyTracer,
    sidecar_service,
)


def registration(topology: Topology) -> dict:
    """The edge is not a Python service, so the runtime registers it (and its sidecar)."""
    edge = topology.edge
    host = topology.bind_host
    return {
        "ID": edge.id,
        "Name": "edge",
        "Address": host,
        "Port": edge.http_port,
        "Check": {
            "Name": "edge admin ready",
            "HTTP": f"http://{host}:{edge.admin_port}/ready",
            "Interval": CHECK_INTERVAL,
            "Timeout": CHECK_TIMEOUT,
            "FailuresBeforeCritical": FAILURES_BEFORE_CRITICAL,
            "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
        },
        "Connect": {
            "SidecarService": sidecar_service(
                instance=edge.id,
                port=edge.sidecar.port,
                address=host,
                local_address=host,
                local_port=edge.http_port,
                upstreams=[(up.service, up.local_bind_port) for up in edge.upstreams],
                metrics_port=edge.sidecar.metrics_port,
                tracer=EnvoyTracer("edge-sidecar", topology.otlp_endpoint()),
            )
        },
    }


def edge_spec(topology: Topology, state: StateDir, envoy_bin: Path) -> ProcessSpec:
    edge = topology.edge
    config_file = state.config / "edge-envoy.json"
    admin = httpx.Client(base_url=f"http://{topology.bind_host}:{edge.admin_port}", timeout=1.0)

    def prepare() -> None:
        certs = ensure_edge_certs(state, topology.bind_host)
        files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET)
        config_file.write_text(json.dumps(envoy_config(topology, files), indent=2))
        client = ConsulClient(topology.consul_http_addr)
        try:
            client.register(registration(topology))
        finally:
            client.close()

    def ready() -> str | None:
        try:
            live = admin.get("/ready").text.strip()
        except httpx.HTTPError as exc:
            return f"edge admin not answering ({exc.__class__.__name__})"
        return None if live == "LIVE" else f"edge /ready says {live!r}"

    return ProcessSpec(
        name="edge",
        argv=[
            str(envoy_bin),
            "-c",
            str(config_file),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--service-node",
            edge.id,
            "--service-cluster",
            "edge",
            "--concurrency",
            str(edge.workers),
        ],
        ports=(edge.http_port, edge.https_port, edge.admin_port),
        before_start=prepare,
        ready=ready,
    )
