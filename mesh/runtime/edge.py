"""The edge gateway as a native process: how it is started and registered in Consul (the
document comes from mesh/registration.py).

Its Envoy config and command line come from mesh/components/edge.py; requests leave the edge
through the edge's own Connect sidecar (its upstream listeners on loopback), which carries them
over mTLS.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from mesh.components.consul import ConsulClient
from mesh.components.edge import EdgeFiles, edge_argv, envoy_config
from mesh.placement import Placement
from mesh.registration import edge_registration
from mesh.runtime import protos
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import ensure_edge_certs
from mesh.topology import Topology


def edge_spec(
    topology: Topology, placement: Placement, state: StateDir, envoy_bin: Path
) -> ProcessSpec:
    edge = topology.edge
    config_file = state.config / "edge-envoy.json"
    admin_url = f"http://{placement.host(edge.id)}:{edge.admin_port}"
    admin = httpx.Client(base_url=admin_url, timeout=1.0)

    def prepare() -> None:
        certs = ensure_edge_certs(state, placement.public())
        files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET)
        config_file.write_text(json.dumps(envoy_config(topology, placement, files), indent=2))
        client = ConsulClient(placement.consul_http_addr(topology, edge.id))
        try:
            # The edge is not a Python service, so the runtime registers it (and its sidecar).
            client.register(edge_registration(topology, placement))
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
        argv=edge_argv(topology, envoy_bin, config_file),
        ports=(edge.http_port, edge.https_port, edge.admin_port),
        before_start=prepare,
        ready=ready,
    )
