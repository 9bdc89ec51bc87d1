"""Every Consul registration of the mesh, generated from the topology: each service instance's
(the service, its health check, its Meta, its Connect sidecar with its upstreams, Envoy's
Prometheus listener and tracing) and the edge's.

A service instance gets its document in SHOPMESH_REGISTRATION (mesh/wiring.py `instance_env`,
natively and in compose) and registers it itself once its health check answers,
so it decides when it is ready and deregisters before it stops (services/common/consul.py). The
document leaves one thing out: Meta's `version`, the version of the code the process runs, which
the process knows and the mesh does not (in compose the image may be built from other code than
the one that generated compose.yaml); the process puts it in before registering. The edge is no
Python service: the runtime registers it (mesh/runtime/edge.py, and compose's `bootstrap`).

What differs natively and in compose is only where things are, the placement's answers: the
instance's address (the bind host natively, the container's own address in compose, where its
sidecar lives too) and Jaeger's OTLP endpoint. The sidecar's upstream listeners are on LOOPBACK in
every placement: the sidecar shares its app's network namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mesh.components import edge_metrics
from mesh.envoy_tracing import EnvoyTracer
from mesh.placement import JAEGER, LOOPBACK, Placement
from mesh.topology import EdgeInstance, Instance, Sidecar, Topology, Upstream

CHECK_INTERVAL = "1s"
CHECK_TIMEOUT = "1s"
# A busy instance is not a dead one: one slow answer under load must not take the only instance
# out of every upstream's pool. Three failed checks in a row (about 3 s) do; a dead process is
# out sooner anyway, through the sidecars' outlier detection and connection failures.
FAILURES_BEFORE_CRITICAL = 3
DEREGISTER_CRITICAL_AFTER = "5m"


def instance_registration(
    topology: Topology, placement: Placement, instance: Instance
) -> dict[str, Any]:
    """The body of PUT /v1/agent/service/register for `instance` and its sidecar, both at the
    instance's address in the placement; where the placement runs Jaeger, the sidecar traces."""
    service = topology.service(instance.service)
    address = placement.address(instance.id)
    tracer = _tracer(topology, placement, f"{service.name}-sidecar")
    return {
        "ID": instance.id,
        "Name": service.name,
        "Address": address,
        "Port": instance.port,
        # How Prometheus (Consul service discovery) finds the instance's /metrics.
        "Meta": {"metrics_port": str(instance.metrics_port)},
        "Check": {
            "Name": f"{instance.id} /health",
            # The admin port's /health, answered off the service's event loop
            # (services/common/health.py), for HTTP and gRPC services alike.
            "HTTP": f"http://{_host(address)}:{instance.metrics_port}/health",
            "Method": "GET",
            **_check_timing(),
        },
        "Connect": {
            "SidecarService": _sidecar_service(
                instance.id,
                instance.sidecar,
                address=address,
                local_port=instance.port,
                upstreams=service.upstreams,
                tracer=tracer,
            )
        },
    }


def edge_registration(
    topology: Topology, placement: Placement, edge: EdgeInstance
) -> dict[str, Any]:
    """An edge instance and its sidecar at the edge's address in the placement, the sidecar
    tracing to the placement's Jaeger; checked on the edge's /ready (its metrics listener)."""
    address = placement.address(edge.id)
    return {
        "ID": edge.id,
        "Name": "edge",
        "Address": address,
        "Port": edge.http_port,
        "Check": {
            "Name": "edge ready",
            "HTTP": f"http://{_host(address)}:{edge.metrics_port}{edge_metrics.READY_PATH}",
            **_check_timing(),
        },
        "Connect": {
            "SidecarService": _sidecar_service(
                edge.id,
                edge.sidecar,
                address=address,
                local_port=edge.http_port,
                upstreams=edge.upstreams,
                tracer=_tracer(topology, placement, "edge-sidecar"),
            )
        },
    }


def _tracer(topology: Topology, placement: Placement, service_name: str) -> EnvoyTracer | None:
    if not placement.runs(JAEGER):
        return None
    return EnvoyTracer(service_name, placement.otlp_endpoint(topology))


def _check_timing() -> dict[str, Any]:
    return {
        "Interval": CHECK_INTERVAL,
        "Timeout": CHECK_TIMEOUT,
        "FailuresBeforeCritical": FAILURES_BEFORE_CRITICAL,
        "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
    }


def _sidecar_service(
    instance_id: str,
    sidecar: Sidecar,
    *,
    address: str,
    local_port: int,
    upstreams: Sequence[Upstream],
    tracer: EnvoyTracer | None,
) -> dict[str, Any]:
    """The Connect sidecar registered with an instance, next to it at `address`.

    The checks are Consul's defaults (listener reachable, parent healthy) at a 1 s interval
    instead of 10 s: a re-registered sidecar starts critical, and the edge must not wait 10 s
    for it after a service restarts. Envoy serves its stats for Prometheus on
    `address:metrics_port/metrics` (found through Consul by mesh/runtime/consul_sd.py). With
    `tracer`, the sidecar's Envoy sends a span for every request it proxies.
    """
    config: dict[str, Any] = {
        "envoy_prometheus_bind_addr": f"{_host(address)}:{sidecar.metrics_port}",
        **(tracer.proxy_config() if tracer else {}),
    }
    return {
        "Port": sidecar.port,
        "Address": address,
        "Proxy": {
            "LocalServiceAddress": address,
            "LocalServicePort": local_port,
            "Upstreams": [
                {
                    "DestinationName": upstream.service,
                    "LocalBindAddress": LOOPBACK,
                    "LocalBindPort": upstream.local_bind_port,
                }
                for upstream in upstreams
            ],
            "Config": config,
        },
        "Checks": [
            {
                "Name": "Connect Sidecar Listening",
                "TCP": f"{_host(address)}:{sidecar.port}",
                "Interval": CHECK_INTERVAL,
                "Timeout": CHECK_TIMEOUT,
                "FailuresBeforeCritical": FAILURES_BEFORE_CRITICAL,
            },
            {"Name": "Connect Sidecar Aliasing " + instance_id, "AliasService": instance_id},
        ],
    }


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
