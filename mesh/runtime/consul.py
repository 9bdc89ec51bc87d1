"""The Consul server and the Connect sidecars as native processes, and the config entries
written at start (their configs and command lines: mesh/components/consul.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from mesh.components.consul import CONFIG_ENTRIES_DIR, ConsulClient, agent_config, sidecar_argv
from mesh.placement import Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Sidecar, Topology


def server_spec(
    topology: Topology, placement: Placement, state: StateDir, consul_bin: Path
) -> ProcessSpec:
    config_file = state.config / "consul.json"
    data_dir = state.data / "consul"
    client = ConsulClient(placement.consul_http_addr(topology))

    def write_config() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(agent_config(topology, placement, data_dir), indent=2))

    def ready() -> str | None:
        try:
            if not client.leader():
                return "no raft leader yet"
            # Connect's CA must have a root before sidecars can get certificates. Until it
            # has initialised, Consul answers 500 "CA has not finished initializing".
            resp = client.http.get("/v1/connect/ca/roots")
            if resp.status_code != 200:
                return f"Connect CA not ready ({resp.status_code} {resp.text.strip()[:80]})"
            return None if resp.json().get("Roots") else "Connect CA has no root yet"
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


def sidecar_spec(
    topology: Topology,
    placement: Placement,
    *,
    service_id: str,
    sidecar: Sidecar,
    consul_bin: Path,
    envoy_bin: Path,
    ready_timeout: float = 60.0,
) -> ProcessSpec:
    """The sidecar of `service_id` as a native process; ready once its Envoy is live and
    Consul's checks of it pass."""
    client = ConsulClient(placement.consul_http_addr(topology))
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
        ),
        # Not the upstream listeners: instances of one service share them (Envoy's reuse_port).
        ports=(sidecar.port, sidecar.admin_port, sidecar.metrics_port),
        ready=ready,
        ready_timeout=ready_timeout,
    )
