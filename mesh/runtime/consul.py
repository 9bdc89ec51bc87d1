"""The Consul servers, this host's client agent and the Connect sidecars as native processes,
and the config entries written at start (their configs and command lines:
mesh/components/consul.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path

import httpx

from mesh.components.consul import (
    CONFIG_ENTRIES_DIR,
    ConsulClient,
    agent_config,
    agent_names,
    gossip_key_config,
    server_config,
    sidecar_argv,
)
from mesh.placement import CONSUL, Placement
from mesh.runtime import process
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import consul_certs, ensure_consul_certs
from mesh.topology import ConsulServer, Sidecar, Topology

# A Serf member's status in /v1/agent/members: 1 alive (2 leaving, 3 left, 4 failed).
SERF_ALIVE = 1
GOSSIP_KEY_BYTES = 32


def gossip_key_file(state: StateDir) -> Path:
    return state.secrets / "consul-gossip.json"


def ensure_transport(topology: Topology, placement: Placement, state: StateDir) -> None:
    """The cluster's gossip key (a config file of its own, owner-only) and every agent's
    certificate, made on first start and kept."""
    key_file = gossip_key_file(state)
    if not key_file.exists():
        key = base64.b64encode(secrets.token_bytes(GOSSIP_KEY_BYTES)).decode()
        write_private(key_file, json.dumps(gossip_key_config(key)))
    ensure_consul_certs(state, agent_names(topology, placement))


def _agent_argv(consul_bin: Path, config_file: Path, state: StateDir) -> list[str]:
    return [
        str(consul_bin),
        "agent",
        f"-config-file={config_file}",
        f"-config-file={gossip_key_file(state)}",
    ]


def server_specs(
    topology: Topology, placement: Placement, state: StateDir, consul_bin: Path
) -> list[ProcessSpec]:
    return [
        _server_spec(topology, placement, state, consul_bin, server)
        for server in topology.consul_servers
    ]


def _server_spec(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    consul_bin: Path,
    server: ConsulServer,
) -> ProcessSpec:
    """A server is ready once it knows a leader, or when none can be known yet: before the
    first bootstrap (its peer set is empty until all servers have joined) or while fewer than a
    quorum of servers run (they are started one by one). The agent's readiness then waits for
    the leader."""
    config_file = state.config / f"{server.name}.json"
    data_dir = state.data / server.name
    client = ConsulClient(_server_http(placement, server))
    quorum = len(topology.consul_servers) // 2 + 1

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_transport(topology, placement, state)
        certs = consul_certs(state, server.name)
        config = server_config(topology, placement, server, data_dir, certs)
        config_file.write_text(json.dumps(config, indent=2))

    def ready() -> str | None:
        try:
            if client.leader():
                return None
            if not client.http.get("/v1/status/peers").json():
                return None
        except httpx.HTTPError as exc:
            return f"HTTP API not answering ({exc.__class__.__name__})"
        running = [s.name for s in topology.consul_servers if process.running(state, s.name)]
        if len(running) < quorum:
            return None
        return f"no raft leader yet ({len(running)} servers running)"

    return ProcessSpec(
        name=server.name,
        argv=_agent_argv(consul_bin, config_file, state),
        ports=(server.server, server.serf_lan, server.http),
        # SIGINT: a server shuts down without leaving the Raft peer set (Consul's default for
        # servers), so it comes back as the same voter.
        stop_signal=2,
        ready=ready,
        before_start=write_config,
    )


def agent_spec(
    topology: Topology, placement: Placement, state: StateDir, consul_bin: Path
) -> ProcessSpec:
    """This host's client agent; ready once it has joined a server, a leader is known and
    Connect's CA serves its roots (sidecars need them for certificates)."""
    config_file = state.config / "consul.json"
    data_dir = state.data / "consul-agent"
    client = ConsulClient(placement.consul_http_addr(topology))

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_transport(topology, placement, state)
        config = agent_config(topology, placement, data_dir, consul_certs(state, CONSUL))
        config_file.write_text(json.dumps(config, indent=2))

    def ready() -> str | None:
        try:
            members = client.http.get("/v1/agent/members").json()
            servers = [m for m in members if m["Tags"].get("role") == "consul"]
            if not any(m["Status"] == SERF_ALIVE for m in servers):
                return "not joined to a server yet"
            leader = client.http.get("/v1/status/leader")
            if leader.status_code != 200 or not leader.json():
                return f"no raft leader known yet ({leader.text.strip()[:80]})"
            # Until it has initialised, Consul answers 500 "CA has not finished initializing".
            resp = client.http.get("/v1/connect/ca/roots")
            if resp.status_code != 200:
                return f"Connect CA not ready ({resp.status_code} {resp.text.strip()[:80]})"
            return None if resp.json().get("Roots") else "Connect CA has no root yet"
        except httpx.HTTPError as exc:
            return f"HTTP API not answering ({exc.__class__.__name__})"

    return ProcessSpec(
        name=CONSUL,
        argv=_agent_argv(consul_bin, config_file, state),
        ports=tuple(vars(topology.consul_ports).values()),
        stop_signal=2,  # SIGINT: a client agent leaves gracefully
        ready=ready,
        before_start=write_config,
    )


def cluster_health(topology: Topology, placement: Placement) -> str:
    """The servers as a whole, from the first that answers: the leader, and how many are
    healthy voters (Consul's autopilot); `ok, ...` only when every server is one."""
    for server in topology.consul_servers:
        try:
            resp = httpx.get(
                f"{_server_http(placement, server)}/v1/operator/autopilot/health", timeout=1.0
            )
            # 429: answered, but not every server is healthy.
            if resp.status_code not in (200, 429):
                continue
            health = resp.json()
        except (httpx.HTTPError, ValueError):
            continue
        members = health["Servers"]
        leader = next((m["Name"] for m in members if m["Leader"]), "none")
        healthy = sum(1 for m in members if m["Healthy"] and m["Voter"])
        whole = health["Healthy"] and healthy == len(topology.consul_servers)
        return (
            f"{'ok, ' if whole else ''}leader {leader}; {healthy} of "
            f"{len(topology.consul_servers)} servers healthy voters, "
            f"{health['FailureTolerance']} may fail"
        )
    return "no leader: no quorum of servers answers"


def _server_http(placement: Placement, server: ConsulServer) -> str:
    return f"http://{placement.host(server.name)}:{server.http}"


def apply_config_entries(consul_bin: Path, http_addr: str) -> list[str]:
    """`consul config write` every file in mesh/consul/config-entries (idempotent)."""
    written = []
    for entry in sorted(CONFIG_ENTRIES_DIR.glob("*.hcl")):
        proc = subprocess.run(
            [str(consul_bin), "config", "write", f"-http-addr={http_addr}", str(entry)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"consul config write {entry.name} failed: {proc.stderr.strip()}")
        written.append(entry.name)
    return written


def sidecar_spec(
    topology: Topology,
    placement: Placement,
    *,
    service_id: str,
    sidecar: Sidecar,
    consul_bin: Path,
    envoy_bin: Path,
    state: StateDir,
    ready_timeout: float = 60.0,
) -> ProcessSpec:
    """The sidecar of `service_id` as a native process; ready once its Envoy is live and
    Consul's checks of it pass."""
    client = ConsulClient(placement.consul_http_addr(topology, service_id))
    admin_url = f"http://{placement.admin(service_id)}:{sidecar.admin_port}"
    admin = httpx.Client(base_url=admin_url, timeout=1.0)

    def ready() -> str | None:
        try:
            live = admin.get("/ready").text.strip()
            if live != "LIVE":
                return f"envoy admin /ready says {live!r}"
            health = client.agent_health(f"{service_id}-sidecar-proxy")
            return None if health == "passing" else f"sidecar check is {health}"
        except httpx.HTTPError as exc:
            return f"envoy admin not answering ({exc.__class__.__name__})"

    return ProcessSpec(
        name=f"{service_id}-sidecar",
        argv=sidecar_argv(
            topology,
            placement,
            service_id=service_id,
            sidecar=sidecar,
            consul_bin=consul_bin,
            envoy_bin=envoy_bin,
            consul_ca=consul_certs(state, CONSUL).ca_cert,
        ),
        # Not the upstream listeners: instances of one service share them (Envoy's reuse_port).
        ports=(sidecar.port, sidecar.admin_port, sidecar.metrics_port),
        ready=ready,
        ready_timeout=ready_timeout,
    )
