"""Prometheus: its config, generated from the topology, and its process.

Every service instance is scraped on its `metrics_port`, every Envoy (sidecars and the edge) on
its admin port's /stats/prometheus, Consul on its own metrics endpoint. The targets come from
the topology, not from Consul: Debian's Prometheus 2.42 is built without `consul_sd_configs`.
The instances also publish `metrics_port` in their Consul service meta, for a Prometheus that
has Consul discovery (the compose image).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology

RULES_DIR = REPO_ROOT / "observability" / "prometheus" / "rules"
SCRAPE_INTERVAL = "5s"


def _envoy_targets(topology: Topology) -> list[dict]:
    targets = [
        {"targets": [f"{topology.bind_host}:{i.sidecar.admin_port}"],
         "labels": {"instance": f"{i.id}-sidecar", "service": i.service}}
        for i in topology.instances()
    ]  # fmt: skip
    targets.append({
        "targets": [f"{topology.bind_host}:{topology.edge.sidecar.admin_port}"],
        "labels": {"instance": f"{topology.edge.id}-sidecar", "service": "edge"},
    })  # fmt: skip
    return targets


def config(topology: Topology) -> dict:
    host = topology.bind_host
    consul_server = f"{host}:{topology.consul_ports.http}"
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [
            {
                "job_name": "services",
                "static_configs": [
                    {"targets": [f"{host}:{i.metrics_port}"],
                     "labels": {"instance": i.id, "service": i.service}}
                    for i in topology.instances()
                ],
            },
            {
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": _envoy_targets(topology),
            },
            {
                "job_name": "edge",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"{host}:{topology.edge.admin_port}"],
                                    "labels": {"instance": topology.edge.id}}],
            },
            {
                "job_name": "consul",
                "metrics_path": "/v1/agent/metrics",
                "params": {"format": ["prometheus"]},
                "static_configs": [{"targets": [consul_server]}],
            },
        ],
    }  # fmt: skip


def server_spec(topology: Topology, state: StateDir, binaries: dict[str, Path]) -> ProcessSpec:
    config_file = state.config / "prometheus.yml"
    data = state.data / "prometheus"
    base = f"http://{topology.bind_host}:{topology.prometheus_port}"

    def write_config() -> None:
        data.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(config(topology), sort_keys=False))

    def ready() -> str | None:
        try:
            resp = httpx.get(f"{base}/-/ready", timeout=1.0)
        except httpx.HTTPError as exc:
            return f"not answering ({exc.__class__.__name__})"
        return None if resp.status_code == 200 else f"/-/ready says {resp.status_code}"

    return ProcessSpec(
        name="prometheus",
        argv=[
            str(binaries["prometheus"]),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address={topology.bind_host}:{topology.prometheus_port}",
            "--log.level=warn",
        ],
        ports=(topology.prometheus_port,),
        before_start=write_config,
        ready=ready,
    )
