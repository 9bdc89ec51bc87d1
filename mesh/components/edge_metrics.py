"""The edge's read-only window on its own admin API: a listener on the edge's `metrics_port`
that answers two GETs from the admin API, which itself is on an owner-only Unix socket
(mesh/runtime/envoy_admin.py), and nothing else.

- `/ready` (the admin API's: `LIVE` with 200, 503 once draining): the balancer's and Consul's
  check of the edge.
- `/metrics` (the admin API's `/stats/prometheus`): Prometheus's scrape, as every sidecar's
  Prometheus listener (Consul's `envoy_prometheus_bind_addr`) answers it.

Its stat prefix is not `edge_*`: the gateway's dashboards and alerts count only client requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.runtime import envoy_admin

T = "type.googleapis.com/envoy.extensions."
HCM = T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = T + "filters.http.router.v3.Router"

READY_PATH = "/ready"
METRICS_PATH = "/metrics"
ADMIN_CLUSTER = "envoy_admin"
STAT_PREFIX = "metrics"


def admin_cluster(socket: Path) -> dict[str, Any]:
    endpoint = {"address": envoy_admin.upstream(socket)}
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }


def _get(path: str) -> dict[str, Any]:
    return {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}


def listener(address: dict[str, Any]) -> dict[str, Any]:
    """GET /ready and GET /metrics on `address`, answered by the admin API; 404 for anything
    else."""
    routes = [
        {"match": _get(READY_PATH), "route": {"cluster": ADMIN_CLUSTER}},
        {"match": _get(METRICS_PATH),
         "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/stats/prometheus"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]  # fmt: skip
    hcm = {
        "@type": HCM,
        "stat_prefix": STAT_PREFIX,
        "route_config": {
            "name": STAT_PREFIX,
            "virtual_hosts": [{"name": STAT_PREFIX, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": STAT_PREFIX,
        "address": address,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }  # fmt: skip
