"""Prometheus: its config, generated from the topology and a placement, and its flags.

Service instances are found through Consul's catalog: by Prometheus's own `consul_sd_configs`
where its build has it (compose's image: `ConsulDiscovery`), or, natively, through files: Debian's
Prometheus 2.42 is built without it, so the `consul-sd` process (mesh/runtime/consul_sd.py)
watches the catalog and writes `file_sd_configs` files (`FileDiscovery`). Each instance is
scraped on the `metrics_port` in its service meta, each sidecar's Envoy on its
`envoy_prometheus_bind_addr` (/metrics): natively found in Consul's catalog too, with Consul's
discovery at the address the placement registers it at (Consul SD has no Proxy.Config). What is
not in Consul's catalog with a metrics endpoint stays a static target from the topology, where
the placement has it: the payment workers (they register nowhere), the edge Envoy (/metrics on
its metrics listener: its admin API's /stats/prometheus), Consul itself (the client agent and
each server), the Kafka nodes' JMX exporter agents, the edge's rate-limit service and, where it
runs, the watchdog (process restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.components import edge_metrics
from mesh.placement import BALANCER, CONSUL, PROMETHEUS, RATELIMIT, WATCHDOG, Placement
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import Topology

RULES_DIR = REPO_ROOT / "observability" / "prometheus" / "rules"
SCRAPE_INTERVAL = "5s"
# Consul's gauges change with the control plane, not with traffic, and each agent renders ~870
# metrics per scrape (the agents' largest idle cost after their checks).
CONSUL_SCRAPE_INTERVAL = "15s"

# inotify reloads a changed file at once; this re-read is only a fallback.
FILE_SD_REFRESH = "30s"
CONSUL_SD_REFRESH = "5s"

# The files mesh/runtime/consul_sd.py writes, one per job.
SERVICES_FILE = "services.json"
ENVOY_FILE = "envoy.json"

# Consul's discovery finds every service; only instances with a metrics port are scraped, there.
CONSUL_SD_RELABELLING: list[dict[str, Any]] = [
    # Discovered, but without metrics: Consul itself, the sidecars, the edge.
    {"source_labels": ["__meta_consul_service", "__meta_consul_service_metadata_metrics_port"],
     "regex": ".+;", "action": "drop"},
    {"source_labels": ["__meta_consul_service_address",
                       "__meta_consul_service_metadata_metrics_port"],
     "regex": "(.+);(.+)", "replacement": "$1:$2", "target_label": "__address__"},
    {"source_labels": ["__meta_consul_service_id"], "regex": "(.+)",
     "target_label": "instance"},
    {"source_labels": ["__meta_consul_service"], "regex": "(.+)", "target_label": "service"},
]  # fmt: skip

# Each Envoy exports ~2,500 series, most of them the buckets of connection histograms nothing
# here reads (a quarter of all series, and of Prometheus's memory); their _sum and _count stay.
ENVOY_UNREAD_BUCKETS: list[dict[str, Any]] = [
    {"source_labels": ["__name__"], "action": "drop",
     "regex": "envoy_(cluster_upstream_rq_per_cx|cluster_upstream_cx_length_ms"
              "|cluster_upstream_cx_connect_ms|http_downstream_cx_length_ms"
              "|listener_downstream_cx_length_ms|listener_connections_accepted_per_socket_event"
              "|cluster_update_duration)_bucket"},
]  # fmt: skip

# A sidecar exports ~1,800 series: ~3/4 of all the mesh's series and of Prometheus's memory. The
# rules, dashboards, tests and benchmarks read only these (tests/unit/test_prometheus_rules.py
# checks). Every sidecar still keeps the full set on its admin API (/stats), for a closer look.
SIDECAR_METRICS_READ: list[dict[str, Any]] = [
    {"source_labels": ["__name__"], "action": "keep",
     "regex": "envoy_(cluster_upstream_rq_(total|xx|retry|pending_overflow)"
              "|cluster_outlier_detection_ejections_(active|enforced_total)"
              "|cluster_circuit_breakers_default_rq_open|cluster_ssl_handshake"
              "|http_downstream_rq_(total|xx|http[123]_total|time_bucket|time_sum|time_count)"
              "|http_jwt_authn_denied"
              "|listener_ssl_(handshake|connection_error|certificate_expiration_unix_time_seconds))"},
]  # fmt: skip

# The same choice made at the source. A sidecar's /metrics is ~2.4 MB (~4,500 samples) every
# scrape, of which Prometheus keeps a twentieth; with `filter` Envoy's admin renders only the
# stats whose own names (cluster.<cluster>.upstream_rq_total, not the exported
# envoy_cluster_upstream_rq_total) end as one of these. It lets through a little more than
# SIDECAR_METRICS_READ keeps, which still decides (tests/integration/test_observability.py
# checks that the filter drops nothing it keeps).
SIDECAR_STATS_FILTER = (
    r"\.(upstream_rq_(total|[1-5]xx|retry|pending_overflow)"
    r"|outlier_detection\.ejections_(active|enforced_total)|circuit_breakers\.default\.rq_open"
    r"|ssl\.(handshake|connection_error)|expiration_unix_time_seconds"
    r"|downstream_rq_(total|[1-5]xx|http[123]_total|time)|jwt_authn\.denied)$"
)

# Each Consul agent exports ~870 series (a quarter of all series): its Raft, RPC, ACL and cache
# timings. The dashboards read only these (tests/unit/test_prometheus_rules.py checks), and the
# autopilot family is kept whole for a look at the servers' health; each agent still serves
# everything on /v1/agent/metrics.
CONSUL_METRICS_READ: list[dict[str, Any]] = [
    {"source_labels": ["__name__"], "action": "keep",
     "regex": "consul_(server_isLeader|autopilot_[a-z_]+|state_connect_instances"
              "|xds_server_streams)"},
]  # fmt: skip


@dataclass(frozen=True)
class FileDiscovery:
    """Consul's catalog through the files consul_sd.py writes into `directory`."""

    directory: Path

    def configs(self, name: str) -> list[dict[str, Any]]:
        return [{"files": [str(self.directory / name)], "refresh_interval": FILE_SD_REFRESH}]


@dataclass(frozen=True)
class ConsulDiscovery:
    """Prometheus's own `consul_sd_configs`."""


Discovery = FileDiscovery | ConsulDiscovery


def config(
    topology: Topology,
    placement: Placement,
    *,
    rule_files: list[str],
    discovery: Discovery,
    consul_token_file: str,
    consul_ca_file: str,
) -> dict[str, Any]:
    """Every scrape job, each target where the placement has it; the workers stay static
    targets of the services job (Consul's relabelling touches discovered ones only). What asks
    Consul (its discovery, the scrape of its agents) does it over HTTPS, checking the agent with
    the Consul CA's certificate `consul_ca_file`, and sends Prometheus's token from
    `consul_token_file` (Consul takes `Authorization: Bearer`)."""
    consul_auth = {"type": "Bearer", "credentials_file": consul_token_file}
    consul_tls = {"scheme": "https", "tls_config": {"ca_file": consul_ca_file}}

    def at(component: str, port: int) -> str:
        return f"{placement.host(component)}:{port}"

    workers = [
        {"targets": [at(name, workers.metrics_port(name))],
         "labels": {"instance": name, "service": workers.name}}
        for workers in topology.workers
        for name in workers.instances
    ]  # fmt: skip
    services: dict[str, Any] = {"job_name": "services"}
    envoy: dict[str, Any] = {
        "job_name": "envoy",
        "metrics_path": "/metrics",
        "params": {"filter": [SIDECAR_STATS_FILTER]},
        "metric_relabel_configs": SIDECAR_METRICS_READ,
    }
    if isinstance(discovery, FileDiscovery):
        services |= {"file_sd_configs": discovery.configs(SERVICES_FILE), "static_configs": workers}
        envoy["file_sd_configs"] = discovery.configs(ENVOY_FILE)
    else:
        consul_server = at(CONSUL, topology.consul_ports.https)
        services |= {
            "static_configs": workers,
            "consul_sd_configs": [
                {
                    "server": consul_server,
                    **consul_tls,
                    "refresh_interval": CONSUL_SD_REFRESH,
                    "authorization": consul_auth,
                }
            ],
            "relabel_configs": CONSUL_SD_RELABELLING,
        }
        envoy["static_configs"] = _sidecars(topology, placement)
    jobs = [
        services,
        envoy,
        {
            "job_name": "edge",
            "metrics_path": edge_metrics.METRICS_PATH,
            "metric_relabel_configs": ENVOY_UNREAD_BUCKETS,
            "static_configs": [{"targets": [at(edge.id, edge.metrics_port)],
                                "labels": {"instance": edge.id, "service": "edge"}}
                               for edge in topology.edge.instances],
        },
        # HAProxy's own exporter: each edge's state, connections and bytes as the balancer sees.
        {
            "job_name": "balancer",
            "static_configs": [{"targets": [at(BALANCER, topology.balancer_stats_port)],
                                "labels": {"instance": BALANCER, "service": BALANCER}}],
        },
        {
            "job_name": "consul",
            "scrape_interval": CONSUL_SCRAPE_INTERVAL,
            "metrics_path": "/v1/agent/metrics",
            "params": {"format": ["prometheus"]},
            **consul_tls,
            "authorization": consul_auth,
            "metric_relabel_configs": CONSUL_METRICS_READ,
            "static_configs": _consul_agents(topology, placement),
        },
        {
            "job_name": "kafka",
            "static_configs": [
                {"targets": [at(node.name, node.metrics_port)],
                 "labels": {"instance": node.name, "service": "kafka"}}
                for node in topology.kafka.nodes
            ],
        },
    ]  # fmt: skip
    if placement.runs(WATCHDOG):
        jobs.append({
            "job_name": "watchdog",
            "static_configs": [{"targets": [at(WATCHDOG, topology.watchdog_port)],
                                "labels": {"instance": "watchdog", "service": "watchdog"}}],
        })  # fmt: skip
    jobs.append({
        "job_name": "ratelimit",
        "static_configs": [{"targets": [at(RATELIMIT, topology.ratelimit_ports.metrics)],
                            "labels": {"instance": "ratelimit", "service": "ratelimit"}}],
    })  # fmt: skip
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": rule_files,
        "scrape_configs": jobs,
    }


def _consul_agents(topology: Topology, placement: Placement) -> list[dict[str, Any]]:
    """Each Consul agent Prometheus reaches: all of them on one host; in the hosts placement,
    where each keeps its HTTPS API on its host's loopback, the ones on Prometheus's host."""
    ports = {agent: topology.consul_ports.https for agent in placement.consul_agents()}
    ports |= {server.name: server.https for server in topology.consul_servers}
    return [
        {"targets": [f"{placement.consul_api_host(agent)}:{port}"],
         "labels": {"instance": agent, "service": "consul"}}
        for agent, port in ports.items()
        if placement.reaches(PROMETHEUS, agent)
    ]  # fmt: skip


def _sidecars(topology: Topology, placement: Placement) -> list[dict[str, Any]]:
    """Each sidecar's Envoy where its registration says it serves /metrics (its instance's
    address: envoy_prometheus_bind_addr, mesh/registration.py)."""
    return [
        {"targets": [f"{placement.address(i.id)}:{i.sidecar.metrics_port}"],
         "labels": {"instance": f"{i.id}-sidecar", "service": i.service}}
        for i in topology.instances()
    ] + [
        {"targets": [f"{placement.address(edge.id)}:{edge.sidecar.metrics_port}"],
         "labels": {"instance": f"{edge.id}-sidecar", "service": "edge"}}
        for edge in topology.edge.instances
    ]  # fmt: skip


def server_args(
    topology: Topology, placement: Placement, config_file: Path | str, data: Path | str
) -> list[str]:
    """The server's flags (natively and in compose)."""
    return [
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={placement.listen(PROMETHEUS)}:{topology.prometheus_port}",
        "--log.level=warn",
    ]
