"""The Consul servers, this host's client agent and the Connect sidecars as native processes,
and the config entries written at start (their configs and command lines:
mesh/components/consul.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from mesh.components.consul import (
    CONFIG_ENTRIES_DIR,
    ConnectEnvoy,
    ConsulClient,
    agent_config,
    agent_names,
    bootstrap_argv,
    envoy_argv,
    gossip_key_config,
    native_bootstrap,
    server_config,
)
from mesh.components.consul_acl import OPERATOR, service_token
from mesh.go_memory import GO_ENV
from mesh.placement import CONSUL, Placement
from mesh.runtime import consul_acl, envoy_admin, process
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import consul_ca, consul_certs, ensure_consul_certs
from mesh.topology import ConsulServer, Sidecar, Topology

# A Serf member's status in /v1/agent/members: 1 alive (2 leaving, 3 left, 4 failed).
SERF_ALIVE = 1
GOSSIP_KEY_BYTES = 32


def gossip_key_file(state: StateDir) -> Path:
    return state.secrets / "consul-gossip.json"


def ensure_transport(topology: Topology, placement: Placement, state: StateDir) -> None:
    """The cluster's gossip key (a config file of its own, owner-only), every agent's
    certificate and every ACL token's secret, made on first start and kept."""
    consul_acl.ensure_token_files(topology, placement, state)
    key_file = gossip_key_file(state)
    if not key_file.exists():
        key = base64.b64encode(secrets.token_bytes(GOSSIP_KEY_BYTES)).decode()
        write_private(key_file, json.dumps(gossip_key_config(key)))
    ensure_consul_certs(state, agent_names(topology, placement))


def _agent_argv(consul_bin: Path, config_file: Path, state: StateDir, agent: str) -> list[str]:
    """The generated config, then the secret ones: the gossip key, the agent's ACL tokens."""
    return [
        str(consul_bin),
        "agent",
        f"-config-file={config_file}",
        f"-config-file={gossip_key_file(state)}",
        f"-config-file={consul_acl.agent_config_file(state, agent)}",
    ]


def operator_client(addr: str, state: StateDir, timeout: float = 2.0) -> ConsulClient:
    """A client with the operator token (mesh/components/consul_acl.py), checking the agent at
    `addr` with the state dir's Consul CA."""
    return ConsulClient(
        addr,
        timeout,
        ca_file=consul_ca(state),
        token_file=consul_acl.token_file(state, OPERATOR),
    )


def server_specs(
    topology: Topology, placement: Placement, state: StateDir, consul_bin: Path
) -> list[ProcessSpec]:
    """The servers, in start order. Once the last is ready (`mesh up`, `mesh start`; not the
    watchdog's restarts, which have nothing to wait for) the leader gets every ACL policy and
    token, before anything that needs one starts: the client agent is the first."""
    specs = [
        _server_spec(topology, placement, state, consul_bin, server)
        for server in topology.consul_servers
    ]
    specs[-1].after_ready = lambda: consul_acl.ensure_acls(topology, placement, state)
    return specs


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
    client = ConsulClient(placement.consul_server_addr(server), ca_file=consul_ca(state))
    quorum = len(topology.consul_servers) // 2 + 1

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_transport(topology, placement, state)
        consul_acl.write_agent_config(topology, state, server.name)
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
            return f"HTTPS API not answering ({exc.__class__.__name__})"
        running = [s.name for s in topology.consul_servers if process.running(state, s.name)]
        if len(running) < quorum:
            return None
        return f"no raft leader yet ({len(running)} servers running)"

    return ProcessSpec(
        name=server.name,
        argv=_agent_argv(consul_bin, config_file, state, server.name),
        env=GO_ENV,
        ports=(server.server, server.serf_lan, server.https),
        # SIGINT: a server shuts down without leaving the Raft peer set (Consul's default for
        # servers), so it comes back as the same voter.
        stop_signal=2,
        ready=ready,
        before_start=write_config,
    )


def agent_spec(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    consul_bin: Path,
    agent: str = CONSUL,
) -> ProcessSpec:
    """A host's client agent (natively the one `consul`); ready once it has joined a server, a
    leader is known and Connect's CA serves its roots (sidecars need them for certificates)."""
    native = agent == CONSUL
    config_file = state.config / ("consul.json" if native else f"{agent}.json")
    data_dir = state.data / ("consul-agent" if native else agent)
    client = operator_client(placement.consul_http_addr(topology, agent), state)

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_transport(topology, placement, state)
        consul_acl.write_agent_config(topology, state, agent)
        certs = consul_certs(state, agent)
        config = agent_config(topology, placement, data_dir, certs, agent)
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
            return f"HTTPS API not answering ({exc.__class__.__name__})"

    return ProcessSpec(
        name=agent,
        argv=_agent_argv(consul_bin, config_file, state, agent),
        env=GO_ENV,
        ports=tuple(vars(topology.consul_ports).values()),
        stop_signal=2,  # SIGINT: a client agent leaves gracefully
        ready=ready,
        before_start=write_config,
    )


def cluster_health(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    on_host: Callable[[str, Callable[[], httpx.Response]], httpx.Response] = lambda _, ask: ask(),
) -> str:
    """The servers as a whole, from the first that answers: the leader, and how many are
    healthy voters (Consul's autopilot); `ok, ...` only when every server is one. Each server
    is asked on its host (`on_host`: where its HTTPS API is reachable)."""
    for server in topology.consul_servers:
        try:
            with operator_client(placement.consul_server_addr(server), state, 1.0) as client:
                ask = partial(client.http.get, "/v1/operator/autopilot/health")
                resp = on_host(server.name, ask)
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


def apply_config_entries(consul_bin: Path, http_addr: str, state: StateDir) -> list[str]:
    """`consul config write` every file in mesh/consul/config-entries (idempotent), with the
    operator token, checking the agent with the Consul CA."""
    connection = [
        f"-http-addr={http_addr}",
        f"-ca-file={consul_ca(state)}",
        f"-token-file={consul_acl.token_file(state, OPERATOR)}",
    ]
    written = []
    for entry in sorted(CONFIG_ENTRIES_DIR.glob("*.hcl")):
        proc = subprocess.run(
            [str(consul_bin), "config", "write", *connection, str(entry)],
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
    state: StateDir,
    *,
    service: str,
    service_id: str,
    sidecar: Sidecar,
    consul_bin: Path,
    envoy_bin: Path,
    ready_timeout: float = 60.0,
) -> ProcessSpec:
    """The sidecar of `service_id` as a native process: Consul writes its bootstrap (from the
    instance's registration and its service's token, so at each start), the runtime moves its
    admin API onto an owner-only Unix socket and runs Envoy with it; ready once Envoy is live
    and Consul's checks of it pass."""
    name = f"{service_id}-sidecar"
    client = operator_client(placement.consul_http_addr(topology, service_id), state)
    # It holds the service's Consul token (the ADS stream's metadata): a secret.
    bootstrap_file = state.secrets / f"{name}-bootstrap.json"
    socket = envoy_admin.socket_path(state, name)
    admin = envoy_admin.client(socket, timeout=1.0)

    def write_bootstrap() -> None:
        connect = ConnectEnvoy(
            service_id=service_id,
            consul_bin=consul_bin,
            consul_ca=consul_ca(state),
            token_file=consul_acl.token_file(state, service_token(service)),
        )
        argv = bootstrap_argv(topology, placement, connect)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"consul connect envoy -bootstrap failed: {proc.stderr.strip()}")
        bootstrap = native_bootstrap(json.loads(proc.stdout), socket)
        write_private(bootstrap_file, json.dumps(bootstrap, indent=2))
        envoy_admin.prepare(state, name)

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
        name=name,
        argv=envoy_argv(envoy_bin, bootstrap_file),
        # Not the upstream listeners: instances of one service share them (Envoy's reuse_port).
        ports=(sidecar.port, sidecar.metrics_port),
        ready=ready,
        ready_timeout=ready_timeout,
        before_start=write_bootstrap,
    )
