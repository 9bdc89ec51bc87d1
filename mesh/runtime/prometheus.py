"""Prometheus as a native process, and the catalog watcher that feeds its file discovery
(mesh/runtime/consul_sd.py); its config: mesh/components/prometheus.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import yaml

from mesh.components.consul_acl import PROMETHEUS as PROMETHEUS_TOKEN
from mesh.components.prometheus import (
    ENVOY_FILE,
    RULES_DIR,
    SERVICES_FILE,
    FileDiscovery,
    config,
    server_args,
)
from mesh.go_memory import GO_ENV
from mesh.placement import PROMETHEUS, Placement
from mesh.runtime.consul_acl import token_file
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.tls import consul_ca
from mesh.topology import Topology

# The process that writes Prometheus's targets from Consul's catalog; it runs beside Prometheus.
DISCOVERY = "consul-sd"


def sd_dir(state: StateDir) -> Path:
    return state.data / "prometheus-sd"


def native_rule_files() -> list[str]:
    return [str(path) for path in sorted(RULES_DIR.glob("*.yml"))]


def discovery_spec(topology: Topology, placement: Placement, state: StateDir) -> ProcessSpec:
    """The catalog watcher; ready once it has written both target files."""
    out = sd_dir(state)
    files = [out / SERVICES_FILE, out / ENVOY_FILE]

    def forget_old_targets() -> None:
        for file in files:
            file.unlink(missing_ok=True)

    def ready() -> str | None:
        missing = [f.name for f in files if not f.exists()]
        return f"{', '.join(missing)} not written yet" if missing else None

    return ProcessSpec(
        name=DISCOVERY,
        argv=[
            sys.executable,
            "-m",
            "mesh.runtime.consul_sd",
            f"--consul={placement.consul_http_addr(topology, PROMETHEUS)}",
            f"--out={out}",
            f"--token-file={token_file(state, PROMETHEUS_TOKEN)}",
            f"--ca-file={consul_ca(state)}",
        ],
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
        before_start=forget_old_targets,
        ready=ready,
        stop_timeout=5,
    )


def server_spec(
    topology: Topology, placement: Placement, state: StateDir, binaries: dict[str, Path]
) -> ProcessSpec:
    config_file = state.config / "prometheus.yml"
    data = state.data / "prometheus"
    base = f"http://{placement.host(PROMETHEUS)}:{topology.prometheus_port}"
    discovery = FileDiscovery(sd_dir(state))

    def write_config() -> None:
        data.mkdir(parents=True, exist_ok=True)
        generated = config(
            topology,
            placement,
            rule_files=native_rule_files(),
            discovery=discovery,
            consul_token_file=str(token_file(state, PROMETHEUS_TOKEN)),
            consul_ca_file=str(consul_ca(state)),
        )
        config_file.write_text(yaml.safe_dump(generated, sort_keys=False))

    def ready() -> str | None:
        try:
            resp = httpx.get(f"{base}/-/ready", timeout=1.0)
        except httpx.HTTPError as exc:
            return f"not answering ({exc.__class__.__name__})"
        return None if resp.status_code == 200 else f"/-/ready says {resp.status_code}"

    return ProcessSpec(
        name="prometheus",
        argv=[str(binaries["prometheus"]), *server_args(topology, placement, config_file, data)],
        env=GO_ENV,
        ports=(topology.prometheus_port,),
        before_start=write_config,
        ready=ready,
    )
