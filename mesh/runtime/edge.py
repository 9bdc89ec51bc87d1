"""The edge gateway's instances as native processes: how each is started, registered in Consul
(the document comes from mesh/registration.py) and drained before a stop on purpose.

Each instance's Envoy config and command line come from mesh/components/edge.py; requests leave
an edge through its own Connect sidecar (its upstream listeners on loopback), which carries them
over mTLS. The balancer in front (mesh/runtime/balancer.py) follows each edge's /ready (on its
metrics listener). The runtime alone reaches the edge's admin API, on its Unix socket
(mesh/runtime/envoy_admin.py), to drain it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from mesh.components import balancer
from mesh.components.consul import ConsulClient
from mesh.components.consul_acl import EDGE_SERVICE, service_token
from mesh.components.edge import DRAIN_TIME_S, EdgeFiles, edge_argv, envoy_config
from mesh.placement import Placement
from mesh.registration import edge_registration
from mesh.runtime import envoy_admin, protos
from mesh.runtime.consul_acl import token_file
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import consul_ca, ensure_edge_certs
from mesh.topology import EdgeInstance, Topology

# After the drain time: for the balancer's last connections to the edge to end.
DRAIN_GRACE_S = 5.0


def config_file(state: StateDir, edge: EdgeInstance) -> Path:
    return state.config / f"{edge.id}-envoy.json"


def edge_spec(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    envoy_bin: Path,
    edge: EdgeInstance,
) -> ProcessSpec:
    config = config_file(state, edge)
    admin = envoy_admin.client(envoy_admin.socket_path(state, edge.id), timeout=1.0)

    def prepare() -> None:
        certs = ensure_edge_certs(state, placement.public())
        socket = envoy_admin.prepare(state, edge.id)
        files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET, socket)
        config.write_text(json.dumps(envoy_config(topology, placement, files, edge), indent=2))
        # The edge is not a Python service, so the runtime registers it (and its sidecar), with
        # the edge's token.
        token = token_file(state, service_token(EDGE_SERVICE))
        with ConsulClient(
            placement.consul_http_addr(topology, edge.id),
            ca_file=consul_ca(state),
            token_file=token,
        ) as client:
            client.register(edge_registration(topology, placement, edge))

    def ready() -> str | None:
        try:
            live = admin.get("/ready").text.strip()
        except httpx.HTTPError as exc:
            return f"edge admin not answering ({exc.__class__.__name__})"
        return None if live == "LIVE" else f"edge /ready says {live!r}"

    def drain() -> None:
        drain_edge(topology, placement, edge, admin)

    return ProcessSpec(
        name=edge.id,
        argv=edge_argv(topology, envoy_bin, config, edge),
        ports=(edge.http_port, edge.https_port, edge.metrics_port),
        before_start=prepare,
        ready=ready,
        before_stop=drain,
    )


def drain_edge(
    topology: Topology, placement: Placement, edge: EdgeInstance, admin: httpx.Client
) -> None:
    """Take the edge out of service without failing a request: fail its /ready (the balancer
    sends it no new connection from its next check on), drain its listeners (every response
    closes its connection, so clients reconnect to the other edge between requests), then wait
    until the balancer has no connection to it left and the drain time is over (its QUIC
    listener, which the kernel still hands new clients, closes then). An edge that does not
    answer has nothing to drain."""
    try:
        admin.post("/healthcheck/fail").raise_for_status()
        admin.post("/drain_listeners", params={"graceful": ""})
    except httpx.HTTPError:
        return
    stats = f"http://{placement.host(balancer.NAME)}:{topology.balancer_stats_port}"
    drained_at = time.monotonic() + DRAIN_TIME_S
    deadline = drained_at + DRAIN_GRACE_S
    while time.monotonic() < deadline:
        try:
            csv = httpx.get(f"{stats}{balancer.STATS_PATH};csv", timeout=1.0).text
            open_connections = balancer.sessions(csv, edge.id)
        except httpx.HTTPError:
            open_connections = 0  # no balancer: nothing reaches the edge through it
        if open_connections == 0 and time.monotonic() >= drained_at:
            return
        time.sleep(0.2)
