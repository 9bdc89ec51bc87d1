"""What each Python process of the mesh is handed: its environment, the same natively, in
compose and in the Helm chart. Where it binds and finds the shared components comes from the
placement; where its secrets come from is the backend's (the Wiring): natively the state dir's
generated passwords, in compose a pgpass file in the state volume, on Kubernetes files of
mounted Secrets (mesh/helm/wiring.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from mesh.components import postgres
from mesh.components.edge import issuer, public_origins
from mesh.placement import JAEGER, Placement
from mesh.registration import instance_registration
from mesh.topology import Instance, Topology, Workers

WEB = "web"

# What every service and worker instance (Python) runs with. glibc's malloc keeps what a peak
# took: an arena per thread (up to 8 per core), and a 16 MiB scrypt buffer, once freed, raises
# its mmap threshold so that the next ones stay in an arena for good. Two arenas and a fixed
# threshold give large blocks back to the system when freed.
PYTHON_ENV = {
    "PYTHONUNBUFFERED": "1",
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(128 * 1024),
}


@dataclass(frozen=True)
class Wiring:
    """A backend's way of handing processes what they need: where everything is (the
    placement) and where the secrets come from."""

    placement: Placement
    # Database (and role) name -> its password in the URL, or None: the process reads it itself
    # (PGPASSFILE).
    database_password: Callable[[str], str | None]
    auth_seed_file: Callable[[], str]
    # Service name -> the file of its Consul token (the process reads it; never in its env).
    consul_token_file: Callable[[str], str]
    # The Consul CA's certificate: the agent's HTTPS API is checked with it.
    consul_ca_file: str
    # Kafka principal -> the path of its password file, as the process sees it.
    kafka_password_file: Callable[[str], str]
    # The CA certificate of the brokers' TLS listener, or None: their listener is plain.
    kafka_ca_file: str | None = None
    # Whether an instance registers itself in Consul (mesh/registration.py), or the platform
    # registers it (consul-k8s, from its pod): it then binds its listen address, where its
    # sidecar and its probes reach it.
    self_registration: bool = True

    def database_url(self, topology: Topology, database: str) -> str:
        password = self.database_password(database)
        return postgres.database_url(topology, self.placement, database, password, database)


def tracing_env(topology: Topology, placement: Placement) -> dict[str, str]:
    """The standard OpenTelemetry variables the services' SDK reads: where spans go (where the
    placement runs no Jaeger, none: a process exports no spans), and the edge's head sampling for
    the traces a process starts itself (a request without a trace context, a timer's work); a
    span with a parent follows its parent's decision."""
    if not placement.runs(JAEGER):
        return {}
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": placement.otlp_endpoint(topology),
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{topology.trace_sample_percent / 100:g}",
    }


def kafka_env(topology: Topology, wiring: Wiring, principal: str) -> dict[str, str]:
    """Where Kafka is and who the process is there: its principal (named as its service, as in
    mesh/kafka/topics.yaml's `clients`) and its password's file."""
    env = {
        "SHOPMESH_KAFKA_BOOTSTRAP": wiring.placement.kafka_bootstrap(topology),
        "SHOPMESH_KAFKA_USERNAME": principal,
        "SHOPMESH_KAFKA_PASSWORD_FILE": wiring.kafka_password_file(principal),
    }
    if wiring.kafka_ca_file is not None:
        env["SHOPMESH_KAFKA_CA_FILE"] = wiring.kafka_ca_file
    return env


def instance_env(topology: Topology, wiring: Wiring, instance: Instance) -> dict[str, str]:
    """The environment of a service instance. It listens on the address it is registered at,
    where its sidecar forwards to; where the platform registers it, on its listen address."""
    service = topology.service(instance.service)
    placement = wiring.placement
    if wiring.self_registration:
        bind_host = placement.address(instance.id)
        # The instance registers this document itself once it answers its health check.
        registration = {
            "SHOPMESH_REGISTRATION": json.dumps(
                instance_registration(topology, placement, instance)
            )
        }
    else:
        bind_host = placement.listen(instance.id)
        registration = {"SHOPMESH_CONSUL_REGISTER": "false"}
    env = {
        "SHOPMESH_SERVICE": service.name,
        "SHOPMESH_INSTANCE": instance.id,
        "SHOPMESH_BIND_HOST": bind_host,
        "SHOPMESH_PORT": str(instance.port),
        "SHOPMESH_CONSUL_HTTP_ADDR": placement.consul_http_addr(topology, instance.id),
        "SHOPMESH_CONSUL_TOKEN_FILE": wiring.consul_token_file(service.name),
        "SHOPMESH_CONSUL_CA_FILE": wiring.consul_ca_file,
        **registration,
        "SHOPMESH_UPSTREAMS": json.dumps(
            [{"name": u.service, "local_bind_port": u.local_bind_port} for u in service.upstreams]
        ),
        # A service without a database uses no Kafka: outboxes and processed events need one.
        **(kafka_env(topology, wiring, service.name) if service.database else {}),
        "SHOPMESH_METRICS_PORT": str(instance.metrics_port),
        **PYTHON_ENV,
        **tracing_env(topology, placement),
    }
    if service.name == "auth":
        env["SHOPMESH_AUTH_ISSUER"] = issuer(topology, placement)
        env["SHOPMESH_AUTH_WEB_ORIGINS"] = ",".join(public_origins(topology, placement))
        env["SHOPMESH_AUTH_SEED_FILE"] = wiring.auth_seed_file()
        limits = topology.login_limits
        env["SHOPMESH_AUTH_LOGIN_WINDOW_S"] = str(limits.window_s)
        env["SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_USER"] = str(limits.per_user)
        env["SHOPMESH_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS"] = str(limits.per_address)
        # The longest a cache of auth's JWKS keeps it: the edge's (services refetch on an
        # unknown kid). auth publishes a new key longer than this before signing with it.
        env["SHOPMESH_AUTH_JWKS_CACHE_S"] = str(topology.edge.jwks_cache_s)
    if service.name == WEB and placement.runs(JAEGER):
        # The trace view reads Jaeger's query API (outside the mesh).
        env["SHOPMESH_WEB_JAEGER_URL"] = (
            f"http://{placement.address(JAEGER)}:{topology.jaeger.ports.ui}"
        )
    if service.database:
        env["SHOPMESH_DATABASE_URL"] = wiring.database_url(topology, service.database)
    return env


def worker_env(
    topology: Topology, wiring: Wiring, workers: Workers, instance: str
) -> dict[str, str]:
    """The environment of a worker instance: registered nowhere and asking Consul nothing, it
    serves only its /metrics, on the placement's listen address."""
    placement = wiring.placement
    return {
        "SHOPMESH_SERVICE": workers.name,
        "SHOPMESH_INSTANCE": instance,
        "SHOPMESH_BIND_HOST": placement.listen(instance),
        "SHOPMESH_METRICS_PORT": str(workers.metrics_port(instance)),
        "SHOPMESH_DATABASE_URL": wiring.database_url(topology, workers.database),
        **kafka_env(topology, wiring, workers.name),
        **PYTHON_ENV,
        **tracing_env(topology, placement),
    }
