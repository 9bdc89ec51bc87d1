"""The tracing keys of a Connect sidecar's Proxy.Config (Consul's escape hatches)."""

from __future__ import annotations

import json

from services.common import consul
from services.common.config import ServiceSettings

ENV = {
    "SHOPMESH_SERVICE": "orders",
    "SHOPMESH_INSTANCE": "orders-1",
    "SHOPMESH_PORT": "7001",
    "SHOPMESH_CONSUL_HTTP_ADDR": "http://127.0.0.1:8500",
    "SHOPMESH_DATABASE_URL": "postgresql://orders:pw@127.0.0.1:15432/orders",
    "SHOPMESH_SIDECAR_PORT": "21001",
    "SHOPMESH_METRICS_PORT": "9401",
    "SHOPMESH_SIDECAR_METRICS_PORT": "9501",
}


def proxy_config(env: dict[str, str]) -> dict:
    body = consul.registration_body(ServiceSettings.from_env(env), version="1")
    return body["Connect"]["SidecarService"]["Proxy"].get("Config", {})


def test_with_an_otlp_endpoint_the_sidecar_traces_every_listener_as_service_sidecar() -> None:
    config = proxy_config({**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    (cluster,) = json.loads(config["envoy_extra_static_clusters_json"])["load_assignment"][
        "endpoints"
    ][0]["lb_endpoints"]
    assert cluster["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 4317,
    }
    bootstrap = json.loads(config["envoy_tracing_json"])["http"]
    listener = json.loads(config["envoy_listener_tracing_json"])
    assert listener["@type"].endswith("HttpConnectionManager.Tracing")
    assert listener["random_sampling"] == {"value": 100.0}
    for provider in (bootstrap, listener["provider"]):
        assert provider["name"] == "envoy.tracers.opentelemetry"
        typed = provider["typed_config"]
        assert typed["service_name"] == "orders-sidecar"
        assert typed["grpc_service"]["envoy_grpc"]["cluster_name"] == consul.OTLP_CLUSTER
    # Helper keys of the same Proxy.Config stay as they were.
    assert config["envoy_prometheus_bind_addr"] == "127.0.0.1:9501"


def test_without_an_otlp_endpoint_the_sidecar_has_no_tracing() -> None:
    config = proxy_config(ENV)
    assert not {k for k in config if "tracing" in k or "static_clusters" in k}
