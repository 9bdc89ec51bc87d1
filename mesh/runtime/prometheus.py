"""Prometheus: its config, generated from the topology, its process, and its target discovery.

Service instances and Connect sidecars are found through Consul's catalog, as
`consul_sd_configs` would: Debian's Prometheus 2.42 is built without it, so the `consul-sd`
process (mesh/runtime/consul_sd.py) watches the catalog and writes `file_sd_configs` files.
Each instance is scraped on the `metrics_port` in its service meta, each sidecar's Envoy on its
`envoy_prometheus_bind_addr` (/metrics). What is not in Consul's catalog with a metrics endpoint
stays a static target from the topology: the payment workers (they register nowhere), the edge
Envoy (its admin /stats/prometheus), Consul itself, the Kafka nodes' JMX exporter agents, the
edge's rate-limit service and the watchdog (process restarts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import yaml

from mesh.runtime import consul_sd
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology

RULES_DIR = REPO_ROOT / "observability" / "prometheus" / "rules"
SCRAPE_INTERVAL = "5s"
# inotify reloads a changed file at once; this re-read is only a fallback.
FILE_SD_REFRESH = "30s"


def sd_dir(state: StateDir) -> Path:
    return state.data / "prometheus-sd"


def _file_sd(state: StateDir, name: str) -> list[dict]:
    return [{"files": [str(sd_dir(state) / name)], "refresh_interval": FILE_SD_REFRESH}]


def config(topology: Topology, state: StateDir) -> dict:
    host = topology.bind_host
    consul_server = f"{host}:{topology.consul_ports.http}"
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(path) for path in sorted(RULES_DIR.glob("*.yml"))],
        "scrape_configs": [
            {
                "job_name": "services",
                "file_sd_configs": _file_sd(state, consul_sd.SERVICES_FILE),
                # Workers register nowhere: their metrics ports come from the topology.
                "static_configs": [
                    {"targets": [f"{host}:{workers.metrics_port(name)}"],
                     "labels": {"instance": name, "service": workers.name}}
                    for workers in topology.workers
                    for name in workers.instances
                ],
            },
            {
                "job_name": "envoy",
                "metrics_path": "/metrics",
                "file_sd_configs": _file_sd(state, consul_sd.ENVOY_FILE),
            },
            {
                "job_name": "edge",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"{host}:{topology.edge.admin_port}"],
                                    "labels": {"instance": topology.edge.id, "service": "edge"}}],
            },
            {
                "job_name": "consul",
                "metrics_path": "/v1/agent/metrics",
                "params": {"format": ["prometheus"]},
                "static_configs": [{"targets": [consul_server],
                                    "labels": {"instance": "consul", "service": "consul"}}],
            },
            {
                "job_name": "kafka",
                "static_configs": [
                    {"targets": [f"{host}:{node.metrics_port}"],
                     "labels": {"instance": node.name, "service": "kafka"}}
                    for node in topology.kafka.nodes
                ],
            },
            {
                "job_name": "watchdog",
                "static_configs": [{"targets": [f"{host}:{topology.watchdog_port}"],
                                    "labels": {"instance": "watchdog", "service": "watchdog"}}],
            },
            {
                "job_name": "ratelimit",
                "static_configs": [{"targets": [f"{host}:{topology.ratelimit_ports.metrics}"],
                                    "labels": {"instance": "ratelimit", "service": "ratelimit"}}],
            },
        ],
    }  # fmt: skip


def discovery_spec(topology: Topology, state: StateDir) -> ProcessSpec:
    """The catalog watcher; ready once it has written both target files."""
    out = sd_dir(state)
    files = [out / consul_sd.SERVICES_FILE, out / consul_sd.ENVOY_FILE]

    def forget_old_targets() -> None:
        for file in files:
            file.unlink(missing_ok=True)

    def ready() -> str | None:
        missing = [f.name for f in files if not f.exists()]
        return f"{', '.join(missing)} not written yet" if missing else None

    return ProcessSpec(
        name="consul-sd",
        argv=[
            sys.executable,
            "-m",
            "mesh.runtime.consul_sd",
            f"--consul={topology.consul_http_addr}",
            f"--out={out}",
        ],
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
        before_start=forget_old_targets,
        ready=ready,
        stop_timeout=5,
    )


def server_spec(topology: Topology, state: StateDir, binaries: dict[str, Path]) -> ProcessSpec:
    config_file = state.config / "prometheus.yml"
    data = state.data / "prometheus"
    base = f"http://{topology.bind_host}:{topology.prometheus_port}"

    def write_config() -> None:
        data.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(config(topology, state), sort_keys=False))

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
