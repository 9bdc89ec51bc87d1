"""The edge gateway: an Envoy whose static config is generated from the topology.

Requests enter on the edge's listener, are routed by path prefix, and leave through the
edge's own Connect sidecar (its upstream listeners on loopback), which carries them to the
service's sidecar over mTLS.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from mesh.runtime.consul import ConsulClient
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology
from services.common.consul import sidecar_service

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STDOUT_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"

ACCESS_LOG_FORMAT = {
    "ts": "%START_TIME%",
    "service": "edge",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
}

# RFC 9457 bodies for replies the edge generates itself (no route, upstream unreachable...).
PROBLEM_BODY = {
    "type": "/problems/edge",
    "title": "%RESPONSE_CODE_DETAILS%",
    "status": "%RESPONSE_CODE%",
    "detail": "%LOCAL_REPLY_BODY%",
    "instance": "%REQ(:PATH)%",
}


def cluster_name(service: str) -> str:
    return f"mesh-{service}"


def envoy_config(topology: Topology) -> dict:
    edge = topology.edge
    host = topology.bind_host
    routes = [
        {
            "match": {"path_separated_prefix": route.prefix},
            "route": {
                "cluster": cluster_name(route.service),
                "timeout": f"{route.timeout_ms / 1000:g}s",
                "retry_policy": {"retry_on": "connect-failure,reset", "num_retries": 2},
            },
        }
        for route in edge.routes
    ]
    # Each HTTP service's OpenAPI spec, published at /openapi/<service>.yaml.
    routes += [
        {
            "match": {"path": f"/openapi/{name}.yaml"},
            "route": {"cluster": cluster_name(name), "prefix_rewrite": "/openapi.yaml"},
        }
        for name in dict.fromkeys(r.service for r in edge.routes)
        if topology.service(name).protocol == "http"
    ]
    clusters = [
        {
            "name": cluster_name(up.service),
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": cluster_name(up.service),
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": host,
                                            "port_value": up.local_bind_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        for up in edge.upstreams
    ]
    hcm = {
        "@type": HCM,
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "access_log": [
            {
                "name": "stdout",
                "typed_config": {
                    "@type": STDOUT_LOG,
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ],
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{"name": "shopmesh", "domains": ["*"], "routes": routes}],
        },
        "local_reply_config": {
            "body_format": {
                "json_format": PROBLEM_BODY,
                "content_type": "application/problem+json",
            }
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "node": {"id": edge.id, "cluster": "edge"},
        "admin": {"address": {"socket_address": {"address": host, "port_value": edge.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": host, "port_value": edge.http_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def registration(topology: Topology) -> dict:
    """The edge is not a Python service, so the runtime registers it (and its sidecar)."""
    edge = topology.edge
    host = topology.bind_host
    return {
        "ID": edge.id,
        "Name": "edge",
        "Address": host,
        "Port": edge.http_port,
        "Check": {
            "Name": "edge admin ready",
            "HTTP": f"http://{host}:{edge.admin_port}/ready",
            "Interval": "1s",
            "Timeout": "1s",
            "DeregisterCriticalServiceAfter": "5m",
        },
        "Connect": {
            "SidecarService": sidecar_service(
                instance=edge.id,
                port=edge.sidecar.port,
                address=host,
                local_address=host,
                local_port=edge.http_port,
                upstreams=[(up.service, up.local_bind_port) for up in edge.upstreams],
            )
        },
    }


def edge_spec(topology: Topology, state: StateDir, envoy_bin: Path) -> ProcessSpec:
    edge = topology.edge
    config_file = state.config / "edge-envoy.json"
    admin = httpx.Client(base_url=f"http://{topology.bind_host}:{edge.admin_port}", timeout=1.0)

    def prepare() -> None:
        config_file.write_text(json.dumps(envoy_config(topology), indent=2))
        client = ConsulClient(topology.consul_http_addr)
        try:
            client.register(registration(topology))
        finally:
            client.close()

    def ready() -> str | None:
        try:
            live = admin.get("/ready").text.strip()
        except httpx.HTTPError as exc:
            return f"edge admin not answering ({exc.__class__.__name__})"
        return None if live == "LIVE" else f"edge /ready says {live!r}"

    return ProcessSpec(
        name="edge",
        argv=[
            str(envoy_bin),
            "-c",
            str(config_file),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--service-node",
            edge.id,
            "--service-cluster",
            "edge",
        ],
        ports=(edge.http_port, edge.admin_port),
        before_start=prepare,
        ready=ready,
    )
