"""Envoy's OpenTelemetry tracer, as the edge's config and every Connect sidecar's registration
spell it: spans go over OTLP gRPC to Jaeger through a static cluster of their own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

# The static cluster through which an Envoy exports its spans (OTLP over gRPC) to Jaeger.
OTLP_CLUSTER = "jaeger-otlp"
OTEL_TRACER_CONFIG = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
HCM_TRACING = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager.Tracing"
)


def discovery_type(host: str) -> str:
    """How a cluster of one endpoint at `host` finds it: as it is (an address), or by DNS (a
    name, where the placement has no fixed addresses: Kubernetes' Service names)."""
    try:
        ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


@dataclass(frozen=True)
class EnvoyTracer:
    """Envoy's OpenTelemetry tracer, sending the spans of `service_name` to `otlp_endpoint`
    (OTEL_EXPORTER_OTLP_ENDPOINT's form, http://host:port, an OTLP gRPC receiver).

    The edge starts each trace, sampling the share of requests the topology's `tracing` says
    (docs/observability.md), and the sidecars continue it through the W3C traceparent header.
    """

    service_name: str
    otlp_endpoint: str

    def cluster(self) -> dict[str, Any]:
        url = urlsplit(self.otlp_endpoint)
        if not url.hostname or not url.port:
            raise ValueError(f"OTLP endpoint must be http://host:port, got {self.otlp_endpoint!r}")
        address = {"socket_address": {"address": url.hostname, "port_value": url.port}}
        return {
            "name": OTLP_CLUSTER,
            "type": discovery_type(url.hostname),
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": OTLP_CLUSTER,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                    "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
        }

    def provider(self) -> dict[str, Any]:
        return {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": OTEL_TRACER_CONFIG,
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": self.service_name,
            },
        }

    def http_connection_manager(self, sample_percent: float = 100.0) -> dict[str, Any]:
        """The `tracing` of an HttpConnectionManager: this tracer, `sample_percent` of the
        requests that arrive without a trace context. A request with one (W3C traceparent) is
        traced as its sampled flag says: Envoy's OpenTelemetry tracer follows its parent, so a
        sidecar, always called by an Envoy or a service with a context, keeps the edge's
        decision. `x-client-trace-id` forces a trace (client_sampling, 100 %)."""
        return {"random_sampling": {"value": sample_percent}, "provider": self.provider()}

    def proxy_config(self) -> dict[str, str]:
        """Consul's escape hatches for a Connect sidecar: the OTLP cluster, the tracer in the
        bootstrap, and the tracing of every HTTP listener (public and upstreams), which Consul
        otherwise gives 0 % random sampling and no provider of its own."""
        listener_tracing = {"@type": HCM_TRACING, **self.http_connection_manager()}
        return {
            "envoy_extra_static_clusters_json": json.dumps(self.cluster()),
            "envoy_tracing_json": json.dumps({"http": self.provider()}),
            "envoy_listener_tracing_json": json.dumps(listener_tracing),
        }
