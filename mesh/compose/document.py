"""compose.yaml as a document, assembled from the generators of mesh/components with the compose
placement (mesh/placement.py): every container, its image, command, environment, volumes,
network, dependencies and health check; and the compose configs of Prometheus and Jaeger. Pure:
it reads the topology and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mesh.components import (
    balancer,
    consul,
    edge,
    kafka,
    kafka_auth,
    postgres,
    prometheus,
    ratelimit,
)
from mesh.components.consul_acl import EDGE_SERVICE, OPERATOR, service_token
from mesh.components.consul_acl import PROMETHEUS as PROMETHEUS_TOKEN
from mesh.compose.volume import (
    APP_UID,
    BALANCER_CONFIG,
    KAFKA_ADMIN_PROPERTIES,
    KAFKA_DATA,
    PGPASS,
    POSTGRES_SUPERUSER_PASSWORD,
    STATE,
    STATE_MOUNT,
    edge_config,
    kafka_format_arguments,
    kafka_node_properties,
)
from mesh.go_memory import GO_ENV
from mesh.placement import (
    COMPOSE_DYNAMIC_RANGE,
    COMPOSE_SUBNET,
    CONSUL,
    JAEGER,
    RATELIMIT,
    ComposePlacement,
)
from mesh.runtime import consul as consul_runtime
from mesh.runtime import demo, tls
from mesh.runtime import kafka as kafka_runtime
from mesh.runtime.consul_acl import agent_config_file, token_file
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import ConsulServer, EdgeInstance, Instance, Topology
from mesh.wiring import WEB, Wiring, instance_env, worker_env

# The committed files: compose.yaml, and the configs its Prometheus and Jaeger mount.
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
PROMETHEUS_FILE = REPO_ROOT / "observability" / "prometheus" / "compose.yml"
JAEGER_FILE = REPO_ROOT / "observability" / "jaeger" / "compose.yml"
# What web's trace view links to (services/web/app.py reads it).
JAEGER_UI_URL = "SHOPMESH_WEB_JAEGER_UI_URL"

# Official images, pinned to the versions the native runtime provisions (docs/runtime.md).
IMAGES = {
    "python": "python:3.11-slim",
    "consul": "hashicorp/consul:1.16.1",
    "envoy": "envoyproxy/envoy:v1.36.2",
    "kafka": "apache/kafka:3.9.2",
    "maven": "maven:3.9.9-eclipse-temurin-21",
    "postgres": "postgres:15.20-bookworm",
    "prometheus": "prom/prometheus:v2.42.0",
    "jaeger": "jaegertracing/jaeger:2.13.0",
    "grafana": "grafana/grafana:11.6.0",
    "redis": "redis:7.0.15",
    # The official image of the HAProxy the native runtime runs (Debian 12's 2.6.12).
    "haproxy": "haproxy:2.6.12",
    # envoyproxy/ratelimit publishes no release tags: its images are tagged with the commit's
    # 8-character short sha (`git rev-parse --short=8`, its Makefile's VERSION), here the commit
    # of the pinned module pseudo-version v1.4.1-0.20260122083618-3fb702589d36.
    "ratelimit": "envoyproxy/ratelimit:3fb70258",
}
# Each sidecar's Envoy admin API, on the loopback of the network namespace it shares with its
# instance (or edge) alone, whose processes run as the same user (APP_UID): no topology port.
SIDECAR_ADMIN_PORT = 19100
# Built from docker/*.Dockerfile; the tags name what is inside.
SERVICE_IMAGE = "shopmesh/service:0.1.0"
SIDECAR_IMAGE = "shopmesh/sidecar:envoy1.36.2-consul1.16.1"
KAFKA_IMAGE = "shopmesh/kafka:3.9.2-jmx1.0.1"
RATELIMIT_IMAGE = "shopmesh/ratelimit:3fb70258-redis7.0.15"
# The JMX exporter agent of mesh/provision/kafka/pom.xml; its sha256 as Maven Central serves it.
JMX_EXPORTER = ("1.0.1", "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1")

# Compose-only: Grafana does not run natively (docs/architecture.md §7).
GRAFANA_PORT = 3000

NETWORK = "mesh"

# Where the images keep what the native runtime keeps in its cache and state dir.
JMX_AGENT = "/opt/jmx/jmx_prometheus_javaagent.jar"
JMX_RULES = "/etc/kafka/jmx-exporter.yml"
CONSUL_DATA = "/consul/data"
CONTAINER_RULES = "/etc/prometheus/rules"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_DATA = "/prometheus"
GRAFANA_PROVISIONING = REPO_ROOT / "observability" / "grafana" / "provisioning"
GRAFANA_DASHBOARDS = REPO_ROOT / "observability" / "grafana" / "dashboards"
# Where observability/grafana/provisioning/dashboards/dashboards.yaml looks for them.
CONTAINER_DASHBOARDS = "/var/lib/grafana/dashboards/shopmesh"

SERVICE_BUILD = {
    "context": ".",
    "dockerfile": "docker/service.Dockerfile",
    "args": {"PYTHON_IMAGE": IMAGES["python"], "APP_UID": str(APP_UID)},
}
KAFKA_BUILD = {
    "context": "docker",
    "dockerfile": "kafka.Dockerfile",
    "args": {
        "MAVEN_IMAGE": IMAGES["maven"],
        "KAFKA_IMAGE": IMAGES["kafka"],
        "JMX_EXPORTER_VERSION": JMX_EXPORTER[0],
        "JMX_EXPORTER_SHA256": JMX_EXPORTER[1],
    },
}
SIDECAR_BUILD = {
    "context": "docker",
    "dockerfile": "sidecar.Dockerfile",
    "args": {"CONSUL_IMAGE": IMAGES["consul"], "ENVOY_IMAGE": IMAGES["envoy"]},
}
RATELIMIT_BUILD = {
    "context": "docker",
    "dockerfile": "ratelimit.Dockerfile",
    "args": {"RATELIMIT_IMAGE": IMAGES["ratelimit"], "REDIS_IMAGE": IMAGES["redis"]},
}


def wiring(placement: ComposePlacement) -> Wiring:
    """The containers' wiring: the database password comes from PGPASSFILE, so the URL has
    none; the auth seed and the Consul tokens are in the state volume."""
    return Wiring(
        placement=placement,
        database_password=lambda database: None,
        auth_seed_file=lambda: str(demo.seed_file(STATE)),
        consul_token_file=lambda service: str(token_file(STATE, service_token(service))),
        consul_ca_file=str(tls.consul_ca(STATE)),
        kafka_password_file=lambda principal: str(kafka_auth.password_file(STATE, principal)),
    )


def _long_running(memory: str) -> dict[str, Any]:
    return {"restart": "unless-stopped", "mem_limit": memory}


def _healthcheck(test: list[str], *, interval: str = "5s", start: str = "30s") -> dict[str, Any]:
    return {
        "test": test,
        "interval": interval,
        "timeout": "5s",
        "retries": 5,
        "start_period": start,
    }


def _http_answers(port: int, path: str, expected: str) -> dict[str, Any]:
    """GET `path` on the container's own port, answered with `expected` in it; with bash alone
    (the envoy and redis images have no curl). HTTP/1.1: Envoy's admin API answers HTTP/1.0
    with a 426."""
    request = f"GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && grep -q {expected} <&3"
    )
    return _healthcheck(["CMD", "bash", "-c", script])


def _envoy_ready(port: int) -> dict[str, Any]:
    """GET /ready on an Envoy's admin API (a sidecar's) or its edge's metrics listener."""
    return _http_answers(port, "/ready", "LIVE")


def _consul_passing(
    topology: Topology, placement: ComposePlacement, instance: Instance
) -> dict[str, Any]:
    """Consul's aggregated health of the instance (200 only when passing), as natively; asked
    with its service's token (its identity reads every service), the agent checked with the
    Consul CA."""
    agent = placement.consul_http_addr(topology, instance.id)
    url = f"{agent}/v1/agent/health/service/id/{instance.id}"
    token = token_file(STATE, service_token(instance.service))
    probe = (
        "import ssl, sys, urllib.request as u; "
        "t = open(sys.argv[2]).read().strip(); "
        "c = ssl.create_default_context(cafile=sys.argv[3]); "
        "u.urlopen(u.Request(sys.argv[1], headers={'X-Consul-Token': t}), timeout=3, context=c)"
    )
    check = ["CMD", "python", "-c", probe, url, str(token), str(tls.consul_ca(STATE))]
    return _healthcheck(check)


def _state_volume(read_only: bool = True) -> str:
    return f"state:{STATE_MOUNT}{':ro' if read_only else ''}"


def _fixed(ip: str) -> dict[str, Any]:
    return {NETWORK: {"ipv4_address": ip}}


def _after(**conditions: str) -> dict[str, Any]:
    return {name: {"condition": condition} for name, condition in conditions.items()}


def _one_shot(**spec: Any) -> dict[str, Any]:
    return {**spec, "restart": "no", "networks": [NETWORK]}


def _consul(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """The client agent: what every container registers with and the sidecars get xDS from."""
    config = consul.agent_config(
        topology, placement, Path(CONSUL_DATA), tls.consul_certs(STATE, CONSUL)
    )
    https = topology.consul_ports.https
    return {
        **_consul_agent(placement, CONSUL, config, "consul-agent-data", https),
        "ports": [f"{placement.public()}:{https}:{https}"],
    }


def _consul_server(
    topology: Topology, placement: ComposePlacement, server: ConsulServer
) -> dict[str, Any]:
    config = consul.server_config(
        topology, placement, server, Path(CONSUL_DATA), tls.consul_certs(STATE, server.name)
    )
    return _consul_agent(placement, server.name, config, f"{server.name}-data", server.https)


def _consul_agent(
    placement: ComposePlacement, name: str, config: dict[str, Any], volume: str, https: int
) -> dict[str, Any]:
    """A Consul agent's container (a server or the client agent), healthy once the servers'
    Raft has a leader, as the agent sees it (/v1/status/leader: the one read that needs no
    token), asked over HTTPS at `localhost` (a name its certificate has), checked with the
    Consul CA (the image has curl)."""
    leader = f"https://localhost:{https}/v1/status/leader"
    return {
        "image": IMAGES["consul"],
        # The gossip key, the agent's certificate and its ACL tokens: from the state volume,
        # made by `init`.
        "command": [
            "agent",
            f"-config-file={consul_runtime.gossip_key_file(STATE)}",
            f"-config-file={agent_config_file(STATE, name)}",
        ],
        # The image's entrypoint writes this to /consul/config/local.json.
        "environment": {**GO_ENV, "CONSUL_LOCAL_CONFIG": json.dumps(config, sort_keys=True)},
        "volumes": [f"{volume}:{CONSUL_DATA}", _state_volume()],
        "depends_on": _after(init="service_completed_successfully"),
        "networks": _fixed(placement.address(name)),
        "healthcheck": _healthcheck(
            [
                "CMD-SHELL",
                f"curl -sf --cacert {tls.consul_ca(STATE)} {leader} | grep -q :",
            ]
        ),
        **_long_running("256m"),
    }


def _consul_config(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """`consul config write` of every config entry, in file order, as the native runtime, with
    the operator token, once the ACL tokens are made."""
    write = (
        "for entry in /config-entries/*.hcl; do "
        f"consul config write -http-addr={placement.consul_http_addr(topology)}"
        f" -ca-file={tls.consul_ca(STATE)} -token-file={token_file(STATE, OPERATOR)}"
        ' "$$entry" || exit 1; done'
    )
    return _one_shot(
        image=IMAGES["consul"],
        entrypoint=["/bin/sh", "-c"],
        command=[write],
        volumes=[
            f"./{consul.CONFIG_ENTRIES_DIR.relative_to(REPO_ROOT)}:/config-entries:ro",
            _state_volume(),
        ],
        depends_on=_after(**{"consul-acl": "service_completed_successfully"}),
    )


def _consul_acl() -> dict[str, Any]:
    """Consul's ACL policies and tokens (mesh/runtime/consul_acl.py), made or updated in place
    with the management token once the client agent sees a leader."""
    return _one_shot(
        image=SERVICE_IMAGE,
        build=SERVICE_BUILD,
        user="0",  # reads the management token
        command=["python", "-m", "mesh.compose", "consul-acl"],
        volumes=[_state_volume()],
        depends_on=_after(consul="service_healthy"),
    )


def _init(topology: Topology) -> dict[str, Any]:
    return _one_shot(
        image=SERVICE_IMAGE,
        build=SERVICE_BUILD,
        user="0",  # chowns each secret to the one user that reads it
        command=["python", "-m", "mesh.compose", "init"],
        volumes=[_state_volume(read_only=False)],
    )


def _postgres(topology: Topology) -> dict[str, Any]:
    port = topology.postgres_port
    return {
        "image": IMAGES["postgres"],
        "command": ["postgres", "-c", f"port={port}", *postgres.server_flags()],
        "environment": {
            "POSTGRES_USER": postgres.SUPERUSER,
            "POSTGRES_PASSWORD_FILE": str(POSTGRES_SUPERUSER_PASSWORD),
            "POSTGRES_INITDB_ARGS": "--auth=scram-sha-256 --encoding=UTF8",
            "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256",
            "PGPORT": str(port),
        },
        "volumes": ["postgres-data:/var/lib/postgresql/data", _state_volume()],
        "networks": [NETWORK],
        "depends_on": _after(init="service_completed_successfully"),
        "healthcheck": _healthcheck(
            ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", postgres.SUPERUSER]
        ),
        **_long_running("512m"),
    }


def kafka_environment(
    topology: Topology, placement: ComposePlacement, node_id: int
) -> dict[str, str]:
    """The node's JVM: its heap, GC and JMX exporter agent. Its settings are the server.properties
    `init` writes into the state volume (mesh/compose/kafka_files.py): they hold its password."""
    node = next(n for n in topology.kafka.nodes if n.id == node_id)
    heap = topology.kafka.heap
    return {
        "KAFKA_HEAP_OPTS": f"-Xmx{heap} -Xms{kafka_runtime.START_HEAP}",
        "KAFKA_JVM_PERFORMANCE_OPTS": " ".join(kafka_runtime.JVM_OPTIONS),
        "KAFKA_OPTS": kafka.jmx_agent(placement, node, JMX_AGENT, JMX_RULES),
        **kafka_runtime.JVM_ENV,
    }


# A Kafka tool in a node's container: without the node's KAFKA_OPTS (the tool's JVM would start
# a second agent on the metrics port) and heap (the node's heap again would not fit the
# container's limit).
_TOOL_ENV = "KAFKA_OPTS= KAFKA_HEAP_OPTS=-Xmx128m"


def _kafka_node(topology: Topology, placement: ComposePlacement, node_id: int) -> dict[str, Any]:
    node = next(n for n in topology.kafka.nodes if n.id == node_id)
    # Formatted (with every principal's SCRAM credentials) on the first start only; the java
    # launcher reads the arguments from their owner-only file.
    start = f"{_TOOL_ENV} /opt/kafka/bin/kafka-storage.sh @{kafka_format_arguments(node)}"
    start += f" && exec /opt/kafka/bin/kafka-server-start.sh {kafka_node_properties(node)}"
    probe = f"{_TOOL_ENV} /opt/kafka/bin/kafka-broker-api-versions.sh"
    probe += f" --command-config {KAFKA_ADMIN_PROPERTIES} --bootstrap-server"
    probe += f" {placement.host(node.name)}:{node.port}"
    return {
        "image": KAFKA_IMAGE,
        "build": KAFKA_BUILD,
        "hostname": node.name,
        "entrypoint": ["/bin/bash", "-c"],
        "command": [start],
        "environment": kafka_environment(topology, placement, node_id),
        "volumes": [
            f"{node.name}-data:{KAFKA_DATA}",
            f"./{kafka.JMX_EXPORTER_RULES.relative_to(REPO_ROOT)}:{JMX_RULES}:ro",
            _state_volume(),
        ],
        "networks": [NETWORK],
        "depends_on": _after(init="service_completed_successfully"),
        "healthcheck": _healthcheck(
            ["CMD-SHELL", f"{probe} > /dev/null"], interval="15s", start="60s"
        ),
        **_long_running(_twice(topology.kafka.heap)),
    }


def _twice(heap: str) -> str:
    """A JVM's container limit: twice its heap (metaspace, threads, direct buffers)."""
    return f"{int(heap[:-1]) * 2}{heap[-1].lower()}"


def _kafka_topics(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """The topics of mesh/kafka/topics.yaml (and their DLQs), created if missing."""
    bootstrap = placement.kafka_bootstrap(topology)
    tool = f"/opt/kafka/bin/kafka-topics.sh --bootstrap-server {bootstrap}"
    tool += f" --command-config {KAFKA_ADMIN_PROPERTIES}"
    creates = [
        f"{tool} --create --if-not-exists --topic {t.name} --partitions {t.partitions} "
        f"--replication-factor {t.replication_factor} "
        + " ".join(f"--config {k}={v}" for k, v in t.configs.items())
        for t in kafka.load_topics()
    ]
    nodes = {n.name: "service_healthy" for n in topology.kafka.nodes}
    return _one_shot(
        image=IMAGES["kafka"],
        entrypoint=["/bin/bash", "-c"],
        command=[" && ".join(creates)],
        volumes=[_state_volume()],
        depends_on=_after(**nodes),
    )


def _kafka_acls() -> dict[str, Any]:
    """The ACLs of mesh/kafka/topics.yaml's clients, as natively (mesh/components/kafka_acl.py)."""
    return _one_shot(
        image=SERVICE_IMAGE,
        build=SERVICE_BUILD,
        user="0",  # reads the admin's password
        command=["python", "-m", "mesh.compose", "kafka-acls"],
        volumes=[_state_volume()],
        depends_on=_after(**{"kafka-topics": "service_completed_successfully"}),
    )


def _bootstrap(topology: Topology) -> dict[str, Any]:
    return _one_shot(
        image=SERVICE_IMAGE,
        build=SERVICE_BUILD,
        user="0",  # reads the superuser password, writes the edge config
        command=["python", "-m", "mesh.compose", "bootstrap"],
        volumes=[_state_volume(read_only=False)],
        depends_on=_after(
            postgres="service_healthy",
            **{"consul-config": "service_completed_successfully"},
        ),
    )


def _app_after(topology: Topology) -> dict[str, Any]:
    nodes = {n.name: "service_healthy" for n in topology.kafka.nodes}
    # Jaeger first, as natively: no process loses its first spans.
    return _after(
        bootstrap="service_completed_successfully",
        **{"kafka-acls": "service_completed_successfully"},
        **nodes,
        jaeger="service_healthy",
    )


def jaeger_ui_url(topology: Topology, placement: ComposePlacement) -> str:
    """Jaeger's UI where a browser reaches it (its published port): compose's image has the UI,
    the native build only a placeholder, so only compose hands it to web's trace view."""
    return f"http://{placement.public()}:{topology.jaeger.ports.ui}"


def _service(topology: Topology, placement: ComposePlacement, instance: Instance) -> dict[str, Any]:
    service = topology.service(instance.service)
    env = instance_env(topology, wiring(placement), instance)
    if service.database:
        env["PGPASSFILE"] = str(PGPASS)
    if service.name == WEB:
        env[JAEGER_UI_URL] = jaeger_ui_url(topology, placement)
    return {
        "image": SERVICE_IMAGE,
        "build": SERVICE_BUILD,
        "hostname": instance.id,
        "command": ["python", "-m", service.module],
        "environment": env,
        "volumes": [_state_volume()],
        "networks": _fixed(placement.address(instance.id)),
        "depends_on": _app_after(topology),
        "healthcheck": _consul_passing(topology, placement, instance),
        **_long_running("256m"),
    }


def _worker(
    topology: Topology, placement: ComposePlacement, name: str, instance: str
) -> dict[str, Any]:
    workers = next(w for w in topology.workers if w.name == name)
    env = worker_env(topology, wiring(placement), workers, instance)
    env["PGPASSFILE"] = str(PGPASS)
    return {
        "image": SERVICE_IMAGE,
        "build": SERVICE_BUILD,
        "hostname": instance,
        "command": ["python", "-m", workers.module],
        "environment": env,
        "volumes": [_state_volume()],
        "networks": [NETWORK],
        "depends_on": _app_after(topology),
        # Ready as natively: once a member of its consumer group.
        "healthcheck": _healthcheck(
            ["CMD", "python", "-m", "mesh.compose", "worker-ready", workers.group]
        ),
        **_long_running("256m"),
    }


def sidecar_command(
    topology: Topology, placement: ComposePlacement, service: str, service_id: str
) -> list[str]:
    """`consul connect envoy`, with the sidecar image's binaries and its service's token; it
    execs Envoy itself, with the admin API on the loopback of the instance's network namespace
    (natively: a Unix socket, docs/security.md#envoy-admin-apis)."""
    connect = consul.ConnectEnvoy(
        service_id=service_id,
        consul_bin=Path("consul"),
        consul_ca=tls.consul_ca(STATE),
        token_file=token_file(STATE, service_token(service)),
    )
    return consul.sidecar_argv(
        topology,
        placement,
        connect,
        admin_port=SIDECAR_ADMIN_PORT,
        envoy_bin=Path("/usr/local/bin/envoy"),
    )


def _sidecar(
    topology: Topology, placement: ComposePlacement, service: str, app: str
) -> dict[str, Any]:
    return {
        "image": SIDECAR_IMAGE,
        "build": SIDECAR_BUILD,
        "network_mode": f"service:{app}",
        "command": sidecar_command(topology, placement, service, app),
        "volumes": [_state_volume()],
        # The image's entrypoint runs the command as the envoy user, given this uid.
        "environment": {"ENVOY_UID": str(APP_UID), "ENVOY_GID": str(APP_UID)},
        # As natively, after its app is healthy: `-sidecar-for` needs the app's registration.
        "depends_on": _after(
            **{app: "service_healthy", "consul-config": "service_completed_successfully"}
        ),
        "healthcheck": _envoy_ready(SIDECAR_ADMIN_PORT),
        **_long_running("128m"),
    }


def _edge(topology: Topology, placement: ComposePlacement, e: EdgeInstance) -> dict[str, Any]:
    """An edge instance, reached by the balancer on its own ports. HTTP/3's UDP port is
    published from the first edge only: a host port goes to one container, and SO_REUSEPORT,
    which spreads it over the edges natively, works within one network namespace."""
    argv = edge.edge_argv(topology, Path("envoy"), edge_config(e), e)
    https = topology.edge.https_port
    quic = [f"{placement.public()}:{https}:{https}/udp"] if e == topology.edge.instances[0] else []
    return {
        "image": IMAGES["envoy"],
        "hostname": e.id,
        "command": argv,
        "environment": {"ENVOY_UID": str(APP_UID), "ENVOY_GID": str(APP_UID)},
        "volumes": [_state_volume()],
        **({"ports": quic} if quic else {}),
        "networks": _fixed(placement.address(e.id)),
        "depends_on": _after(
            bootstrap="service_completed_successfully",
            jaeger="service_healthy",
            ratelimit="service_healthy",
        ),
        "healthcheck": _envoy_ready(e.metrics_port),
        **_long_running("256m"),
    }


def _balancer(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """HAProxy with the native config (written by `bootstrap`), publishing the edge's TCP
    ports."""
    e, public = topology.edge, placement.public()
    stats = topology.balancer_stats_port
    return {
        "image": IMAGES["haproxy"],
        "command": ["haproxy", "-db", "-f", str(BALANCER_CONFIG)],
        "volumes": [_state_volume()],
        "ports": [
            f"{public}:{e.http_port}:{e.http_port}/tcp",
            f"{public}:{e.https_port}:{e.https_port}/tcp",
        ],
        "networks": [NETWORK],
        "depends_on": _after(**{i.id: "service_healthy" for i in e.instances}),
        "healthcheck": _http_answers(stats, f"{balancer.METRICS_PATH}", "haproxy_process"),
        **_long_running("64m"),
    }


def _redis(topology: Topology) -> dict[str, Any]:
    """The native config (written by `init`: it carries the password), on the container's every
    interface, unpublished; memory only, so no volume."""
    port = topology.redis_port
    password = ratelimit.password_file(STATE)
    ping = f'REDISCLI_AUTH="$$(cat {password})" redis-cli -p {port} ping | grep -q PONG'
    return {
        "image": IMAGES["redis"],
        "command": ["redis-server", str(ratelimit.redis_config_file(STATE))],
        "volumes": [_state_volume()],
        "networks": [NETWORK],
        "depends_on": _after(init="service_completed_successfully"),
        "healthcheck": _healthcheck(["CMD-SHELL", ping]),
        **_long_running("128m"),
    }


def _ratelimit(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """envoyproxy/ratelimit with the native settings, Redis by its compose name; the password
    from the state volume into REDIS_AUTH, never into compose.yaml."""
    password = ratelimit.password_file(STATE)
    env = ratelimit.service_env(topology, placement, STATE)
    return {
        "image": RATELIMIT_IMAGE,
        "build": RATELIMIT_BUILD,
        "user": str(APP_UID),
        "entrypoint": ["/bin/bash", "-c"],
        "command": [f'export REDIS_AUTH="$$(cat {password})" && exec ratelimit'],
        "environment": env,
        "volumes": [_state_volume()],
        "networks": _fixed(placement.address(RATELIMIT)),
        "depends_on": _after(redis="service_healthy"),
        "healthcheck": _http_answers(topology.ratelimit_ports.http, "/healthcheck", "OK"),
        **_long_running("128m"),
    }


def _prometheus(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    port = topology.prometheus_port
    rel = PROMETHEUS_FILE.relative_to(REPO_ROOT)
    return {
        "image": IMAGES["prometheus"],
        "command": prometheus.server_args(topology, placement, PROMETHEUS_CONFIG, PROMETHEUS_DATA),
        "environment": GO_ENV,
        "volumes": [
            f"./{rel}:{PROMETHEUS_CONFIG}:ro",
            f"./{prometheus.RULES_DIR.relative_to(REPO_ROOT)}:{CONTAINER_RULES}:ro",
            f"prometheus-data:{PROMETHEUS_DATA}",
            _state_volume(),  # its Consul token
        ],
        "ports": [f"{placement.public()}:{port}:{port}"],
        "networks": [NETWORK],
        "depends_on": _after(**{"consul-acl": "service_completed_successfully"}),
        "healthcheck": _healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/-/ready"]
        ),
        **_long_running("512m"),
    }


def _jaeger(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    ports = topology.jaeger.ports
    rel = JAEGER_FILE.relative_to(REPO_ROOT)
    return {
        "image": IMAGES["jaeger"],
        "command": ["--config", "/etc/jaeger/config.yml"],
        "environment": GO_ENV,
        "volumes": [f"./{rel}:/etc/jaeger/config.yml:ro"],
        "ports": [f"{placement.public()}:{ports.ui}:{ports.ui}"],
        "networks": _fixed(placement.address(JAEGER)),
        "healthcheck": _healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{ports.health}/status"]
        ),
        **_long_running("512m"),
    }


def _grafana(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    return {
        "image": IMAGES["grafana"],
        "environment": {
            "GF_SERVER_HTTP_PORT": str(GRAFANA_PORT),
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        },
        "volumes": [
            f"./{GRAFANA_PROVISIONING.relative_to(REPO_ROOT)}:/etc/grafana/provisioning:ro",
            f"./{GRAFANA_DASHBOARDS.relative_to(REPO_ROOT)}:{CONTAINER_DASHBOARDS}:ro",
            "grafana-data:/var/lib/grafana",
        ],
        "ports": [f"{placement.public()}:{GRAFANA_PORT}:{GRAFANA_PORT}"],
        "networks": [NETWORK],
        "depends_on": _after(prometheus="service_healthy", jaeger="service_healthy"),
        "healthcheck": _healthcheck(
            ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{GRAFANA_PORT}/api/health"]
        ),
        **_long_running("256m"),
    }


def document(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    services: dict[str, Any] = {
        "init": _init(topology),
        **{s.name: _consul_server(topology, placement, s) for s in topology.consul_servers},
        "consul": _consul(topology, placement),
        "consul-acl": _consul_acl(),
        "consul-config": _consul_config(topology, placement),
        "postgres": _postgres(topology),
    }
    for node in topology.kafka.nodes:
        services[node.name] = _kafka_node(topology, placement, node.id)
    services["kafka-topics"] = _kafka_topics(topology, placement)
    services["kafka-acls"] = _kafka_acls()
    services["bootstrap"] = _bootstrap(topology)
    for instance in topology.instances():
        services[instance.id] = _service(topology, placement, instance)
        services[f"{instance.id}-sidecar"] = _sidecar(
            topology, placement, instance.service, instance.id
        )
    for workers in topology.workers:
        for instance_id in workers.instances:
            services[instance_id] = _worker(topology, placement, workers.name, instance_id)
    services["redis"] = _redis(topology)
    services["ratelimit"] = _ratelimit(topology, placement)
    for e in topology.edge.instances:
        services[e.id] = _edge(topology, placement, e)
        services[f"{e.id}-sidecar"] = _sidecar(topology, placement, EDGE_SERVICE, e.id)
    services["balancer"] = _balancer(topology, placement)
    services["jaeger"] = _jaeger(topology, placement)
    services["prometheus"] = _prometheus(topology, placement)
    services["grafana"] = _grafana(topology, placement)
    volumes = ["state", *(f"{s.name}-data" for s in topology.consul_servers), "consul-agent-data"]
    volumes += ["postgres-data"]
    volumes += [f"{n.name}-data" for n in topology.kafka.nodes]
    volumes += ["prometheus-data", "grafana-data"]
    return {
        "name": "shopmesh",
        "services": services,
        "networks": {
            NETWORK: {
                "ipam": {
                    "config": [
                        {"subnet": str(COMPOSE_SUBNET), "ip_range": str(COMPOSE_DYNAMIC_RANGE)}
                    ]
                }
            }
        },
        "volumes": {name: {} for name in volumes},
    }


def prometheus_config(topology: Topology, placement: ComposePlacement) -> dict[str, Any]:
    """The jobs, targets and labels of the native config, with the image's own Consul discovery
    and the rules where the container mounts them."""
    rules = [f"{CONTAINER_RULES}/*.yml"]
    discovery = prometheus.ConsulDiscovery()
    return prometheus.config(
        topology,
        placement,
        rule_files=rules,
        discovery=discovery,
        consul_token_file=str(token_file(STATE, PROMETHEUS_TOKEN)),
        consul_ca_file=str(tls.consul_ca(STATE)),
    )
