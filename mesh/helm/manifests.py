"""The chart's Kubernetes objects, built from the topology, the intentions and the Kafka
topics. Pure: reads them, writes nothing. Where an object takes a size (replicas, resources,
storage) it holds a reference into the values (`value`, `block`), which `chart` turns into Helm
template expressions; everything else (names, ports, upstreams, who may call whom) comes from
the topology and cannot be changed at install time, so it cannot drift from it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml

from mesh.components import edge as edge_config
from mesh.components import jaeger, postgres
from mesh.components.kafka import TopicSpec
from mesh.components.kafka_acl import (
    AclBinding,
    KafkaClient,
    Operation,
    Pattern,
    Resource,
    client_bindings,
)
from mesh.compose.volume import EDGE_ADMIN_SOCKET
from mesh.go_memory import GO_ENV
from mesh.helm import wiring as kube_wiring
from mesh.helm.intentions import Intention
from mesh.helm.service_defaults import service_defaults_spec
from mesh.helm.wiring import SecretFile
from mesh.placement import JAEGER, KubernetesPlacement
from mesh.runtime import protos
from mesh.topology import Service, Topology, Workers
from mesh.wiring import WEB, instance_env, worker_env

Object = dict[str, Any]

PART_OF = "shopmesh"
# consul-k8s's defaults: the injected sidecar's public (mTLS) listener, and the Kafka cluster's
# name is the Strimzi resources' label.
CONNECT_INBOUND_PORT = 20000
KAFKA_CLUSTER = "kafka"
STRIMZI_API = "kafka.strimzi.io/v1beta2"
CONSUL_API = "consul.hashicorp.com/v1alpha1"
# The service image's user (docker/service.Dockerfile's APP_UID) and the postgres image's.
APP_UID = 10001
POSTGRES_UID = 999
POSTGRES = "postgres"
POSTGRES_SECRET = "postgres-superuser"
EDGE = "edge"
# The edge's ConfigMap (its Envoy config and the protos' descriptor set) and its certificate's
# Secret (kubernetes.io/tls, generated once by the chart), each mounted where EDGE_FILES say.
EDGE_CONFIG = "edge-envoy"
EDGE_CONFIG_DIR = "/etc/envoy"
EDGE_CONFIG_FILE = "envoy.json"
EDGE_TLS_SECRET = "edge-tls"
EDGE_TLS_DIR = "/etc/edge-tls"
EDGE_FILES = edge_config.EdgeFiles(
    server_cert=Path(EDGE_TLS_DIR) / "tls.crt",
    server_key=Path(EDGE_TLS_DIR) / "tls.key",
    descriptor_set=Path(EDGE_CONFIG_DIR) / "protos.pb",
    # The pod's own /tmp (an emptyDir), as in compose.
    admin_socket=EDGE_ADMIN_SOCKET,
)
# Where Jaeger's pod mounts its ConfigMap `jaeger`.
JAEGER_CONFIG_DIR = "/etc/jaeger"
JAEGER_CONFIG_FILE = "config.yaml"


def value(*path: str) -> str:
    """A scalar of the values file, at `path`."""
    return "__VALUE__" + "/".join(path) + "__"


def block(*path: str) -> str:
    """A mapping of the values file, at `path`, placed as the value of its key."""
    return "__BLOCK__" + "/".join(path) + "__"


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def meta(name: str, component: str, **extra: Any) -> Object:
    return {"name": name, "labels": labels(name, component), **extra}


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": APP_UID,
    "runAsGroup": APP_UID,
    "fsGroup": APP_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _tmp_volume() -> tuple[list[Object], list[Object]]:
    return [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]


def _probes(handler: Object) -> Object:
    """Startup, readiness and liveness probes, all asking `handler` (httpGet, grpc or exec)."""
    return {
        "startupProbe": {**handler, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**handler, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**handler, "periodSeconds": 10, "failureThreshold": 3},
    }


def _connect_annotations(service: str, port_name: str, upstreams: str) -> dict[str, str]:
    annotations = {
        "consul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/connect-service": service,
        "consul.hashicorp.com/connect-service-port": port_name,
        # Explicit upstreams on 127.0.0.1, as natively: the services call local_bind_ports.
        "consul.hashicorp.com/transparent-proxy": "false",
    }
    if upstreams:
        annotations["consul.hashicorp.com/connect-service-upstreams"] = upstreams
    return annotations


def _deployment(
    name: str,
    component: str,
    annotations: dict[str, str],
    container: Object,
    files: tuple[SecretFile, ...] = (),
    **pod: Any,
) -> Object:
    """A Deployment of one container, with /tmp and each of the Secret `files` it reads."""
    volumes, mounts = _tmp_volume()
    volumes += [f.volume_object() for f in files]
    mounts += [f.mount() for f in files]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, component),
        "spec": {
            "replicas": value("workloads", name, "replicas"),
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name, component), "annotations": annotations},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": POD_SECURITY,
                    "volumes": volumes,
                    "containers": [
                        {
                            **container,
                            "resources": block("workloads", name, "resources"),
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": mounts,
                        }
                    ],
                    **pod,
                },
            },
        },
    }


def _service_account(name: str, component: str) -> Object:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, component)}


def _pdb(name: str, component: str) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


# The share of its CPU request a stateless workload's pods average before the HPA adds one.
HPA_CPU_UTILIZATION = 70


def _hpa(name: str, component: str) -> Object:
    """Scales on CPU between the values' `replicas` and `maxReplicas`."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": value("workloads", name, "replicas"),
            "maxReplicas": value("workloads", name, "maxReplicas"),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": HPA_CPU_UTILIZATION,
                        },
                    },
                }
            ],
        },
    }


# The consumer lag (messages behind, each consumer's shopmesh_kafka_consumer_lag) a worker's
# replicas may average before the HPA adds one: a guess until `make bench` measures a worker's rate.
LAG_PER_REPLICA = 100


def _lag_hpa(workers: Workers) -> Object:
    """Scales a worker on its consumer group's lag, as an external metric: the cluster needs an
    adapter that serves Prometheus's series on the external metrics API (docs/kubernetes.md)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(workers.name, "worker"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": workers.name},
            "minReplicas": value("workloads", workers.name, "replicas"),
            "maxReplicas": value("workloads", workers.name, "maxReplicas"),
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "shopmesh_kafka_consumer_lag",
                                   "selector": {"matchLabels": {"group": workers.group}}},
                        "target": {"type": "AverageValue", "averageValue": str(LAG_PER_REPLICA)},
                    },
                }
            ],
        },
    }  # fmt: skip


def _wired(
    kube: KubernetesPlacement,
    env: dict[str, str],
    name: str,
    database: str | None,
    principal: str | None,
) -> tuple[list[Object], tuple[SecretFile, ...]]:
    """A process's environment as its container's, and the Secret files it names."""
    files = kube_wiring.secret_files(kube, name, principal)
    named = tuple(f for f in files if f.path in env.values())
    return kube_wiring.container_env(env, database), named


def service_objects(
    topology: Topology, kube: KubernetesPlacement, service: Service
) -> list[Object]:
    """ServiceAccount, Service, Deployment, PodDisruptionBudget and ServiceDefaults of one
    service: consul-k8s needs a ServiceAccount and a Service named as the Consul service. Its
    environment is its first instance's (mesh/wiring.py), through the Kubernetes placement."""
    first = service.instances[0]
    env, files = _wired(
        kube,
        instance_env(topology, kube_wiring.wiring(kube), first),
        service.name,
        service.database,
        service.name if service.database else None,
    )
    upstreams = ",".join(f"{u.service}:{u.local_bind_port}" for u in service.upstreams)
    ports = [
        {"name": "app", "containerPort": first.port},
        {"name": "metrics", "containerPort": first.metrics_port},
    ]
    probes = (
        _probes({"grpc": {"port": first.port}})
        if service.protocol == "grpc"
        else _probes({"httpGet": {"path": "/health", "port": "metrics"}})
    )
    container = {
        "name": service.name,
        "image": value("image", "service"),
        "command": ["python", "-m", service.module],
        "ports": ports,
        "env": env,
        **probes,
    }
    return [
        _service_account(service.name, "service"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(service.name, "service"),
            "spec": {
                "selector": selector(service.name),
                "ports": [{"name": "app", "port": first.port, "targetPort": "app"}],
            },
        },
        _deployment(
            service.name,
            "service",
            _connect_annotations(service.name, "app", upstreams),
            container,
            files,
            topologySpreadConstraints=_spread(service.name),
        ),
        _pdb(service.name, "service"),
        _hpa(service.name, "service"),
        {
            "apiVersion": CONSUL_API,
            "kind": "ServiceDefaults",
            "metadata": meta(service.name, "service"),
            "spec": service_defaults_spec(service.name),
        },
    ]


def worker_objects(topology: Topology, kube: KubernetesPlacement, workers: Workers) -> list[Object]:
    """The workers consume Kafka and call no service: no Service, no sidecar."""
    metrics_port = workers.metrics_ports[0]
    env, files = _wired(
        kube,
        worker_env(topology, kube_wiring.wiring(kube), workers, workers.instances[0]),
        workers.name,
        workers.database,
        workers.name,
    )
    container = {
        "name": workers.name,
        "image": value("image", "service"),
        "command": ["python", "-m", workers.module],
        "ports": [{"name": "metrics", "containerPort": metrics_port}],
        "env": env,
        **_probes({"httpGet": {"path": "/health", "port": "metrics"}}),
        # Ready once a member of its consumer group, as compose's health check.
        "readinessProbe": {
            "exec": {"command": ["python", "-m", "mesh.compose", "worker-ready", workers.group]},
            "periodSeconds": 5,
            "timeoutSeconds": 10,
        },
    }
    return [
        _service_account(workers.name, "worker"),
        _deployment(
            workers.name,
            "worker",
            {"consul.hashicorp.com/connect-inject": "false"},
            container,
            files,
            topologySpreadConstraints=_spread(workers.name),
        ),
        _pdb(workers.name, "worker"),
        _lag_hpa(workers),
    ]


def _spread(name: str) -> list[Object]:
    """One per node where possible (DoNotSchedule), and across zones where there are zones."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": selector(name)},
        }
        for key, when in (
            ("kubernetes.io/hostname", "DoNotSchedule"),
            ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        )
    ]


def edge_config_map(topology: Topology, kube: KubernetesPlacement) -> Object:
    """The edge's Envoy config (mesh/components/edge.py, as natively and in compose, through
    the Kubernetes placement: the first edge's, every replica's), beside the protos' descriptor
    set its transcoder reads."""
    config = edge_config.envoy_config(topology, kube, EDGE_FILES, topology.edge.instances[0])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(EDGE_CONFIG, "edge"),
        "data": {EDGE_CONFIG_FILE: json.dumps(config, indent=2) + "\n"},
        "binaryData": {
            EDGE_FILES.descriptor_set.name: base64.b64encode(
                protos.DESCRIPTOR_SET.read_bytes()
            ).decode()
        },
    }


def edge_objects(topology: Topology, kube: KubernetesPlacement) -> list[Object]:
    """The edge Envoy as a Deployment (its sidecar's upstreams: the edge's) behind a
    LoadBalancer Service with the topology's public ports, its config from `edge-envoy`, its
    certificate from `edge-tls` (mesh/helm/chart.py generates both)."""
    edge = topology.edge
    first = edge.instances[0]
    upstreams = ",".join(f"{u.service}:{u.local_bind_port}" for u in first.upstreams)
    config = Path(EDGE_CONFIG_DIR) / EDGE_CONFIG_FILE
    container = {
        "name": EDGE,
        "image": value("image", "edge"),
        "args": edge_config.edge_argv(topology, Path("envoy"), config, first),
        "ports": [
            {"name": "http", "containerPort": first.http_port},
            {"name": "https", "containerPort": first.https_port},
            # HTTP/3 on the public port itself, as every edge binds it natively.
            {"name": "http3", "containerPort": edge.https_port, "protocol": "UDP"},
            {"name": "metrics", "containerPort": first.metrics_port},
        ],
        **_probes({"httpGet": {"path": "/ready", "port": "metrics"}}),
    }
    deployment = _deployment(
        EDGE,
        "edge",
        _connect_annotations(EDGE, "http", upstreams),
        container,
        topologySpreadConstraints=_spread(EDGE),
    )
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"] += [
        {"name": "envoy", "configMap": {"name": EDGE_CONFIG}},
        {"name": "tls", "secret": {"secretName": EDGE_TLS_SECRET,
                                   "defaultMode": kube_wiring.SECRET_MODE}},
    ]  # fmt: skip
    pod["containers"][0]["volumeMounts"] += [
        {"name": "envoy", "mountPath": EDGE_CONFIG_DIR, "readOnly": True},
        {"name": "tls", "mountPath": EDGE_TLS_DIR, "readOnly": True},
    ]
    return [
        _service_account(EDGE, "edge"),
        edge_config_map(topology, kube),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(EDGE, "edge"),
            "spec": {
                "type": "LoadBalancer",
                "selector": selector(EDGE),
                "ports": [
                    {"name": "http", "port": edge.http_port, "targetPort": "http"},
                    {"name": "https", "port": edge.https_port, "targetPort": "https"},
                    {
                        "name": "http3",
                        "port": edge.https_port,
                        "targetPort": "http3",
                        "protocol": "UDP",
                    },
                ],
            },
        },
        deployment,
        _hpa(EDGE, "edge"),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(EDGE, "edge"),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(EDGE)}},
        },
        {
            "apiVersion": CONSUL_API,
            "kind": "ServiceDefaults",
            "metadata": meta(EDGE, "edge"),
            "spec": service_defaults_spec(EDGE),
        },
    ]


def jaeger_objects(topology: Topology, kube: KubernetesPlacement) -> list[Object]:
    """Jaeger v2 all-in-one (in-memory traces, as natively), its config mesh/components/jaeger.py's
    through the Kubernetes placement, behind the Service `jaeger` every process and Envoy sends
    its spans to (mesh/wiring.py's OTLP endpoint, the edge's tracer)."""
    ports = topology.jaeger.ports
    exposed = {"otlp-grpc": ports.otlp_grpc, "otlp-http": ports.otlp_http, "ui": ports.ui,
               "query-grpc": ports.query_grpc}  # fmt: skip
    config = yaml.safe_dump(jaeger.config(topology, kube), sort_keys=False)
    container = {
        "name": JAEGER,
        "image": value("image", "jaeger"),
        "args": ["--config", f"{JAEGER_CONFIG_DIR}/{JAEGER_CONFIG_FILE}"],
        "env": [{"name": name, "value": setting} for name, setting in GO_ENV.items()],
        "ports": [
            *({"name": name, "containerPort": port} for name, port in exposed.items()),
            {"name": "health", "containerPort": ports.health},
            {"name": "metrics", "containerPort": ports.metrics},
        ],
        **_probes({"httpGet": {"path": "/status", "port": "health"}}),
    }
    deployment = _deployment(
        JAEGER, "tracing", {"consul.hashicorp.com/connect-inject": "false"}, container,
        automountServiceAccountToken=False, topologySpreadConstraints=_spread(JAEGER),
    )  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "config", "configMap": {"name": JAEGER}})
    pod["containers"][0]["volumeMounts"].append(
        {"name": "config", "mountPath": JAEGER_CONFIG_DIR, "readOnly": True}
    )
    return [
        _service_account(JAEGER, "tracing"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(JAEGER, "tracing"),
            "data": {JAEGER_CONFIG_FILE: config},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(JAEGER, "tracing"),
            "spec": {
                "selector": selector(JAEGER),
                "ports": [
                    {"name": name, "port": port, "targetPort": name}
                    for name, port in exposed.items()
                ],
            },
        },
        deployment,
        _pdb(JAEGER, "tracing"),
    ]


def intention_objects(intentions: tuple[Intention, ...]) -> list[Object]:
    """A ServiceIntentions CR per destination, as the native runtime's config entries say
    (the default deny's destination `*` is named `default-deny`)."""
    objects = []
    for intention in intentions:
        name = "default-deny" if intention.destination == "*" else intention.destination
        objects.append(
            {
                "apiVersion": CONSUL_API,
                "kind": "ServiceIntentions",
                "metadata": meta(name, "intentions"),
                "spec": {
                    "destination": {"name": intention.destination},
                    "sources": [
                        {"name": source, "action": action} for source, action in intention.sources
                    ],
                },
            }
        )
    return objects


def network_policies(topology: Topology, intentions: tuple[Intention, ...]) -> list[Object]:
    """Default deny for every pod of the chart, then what the intentions allow (into the
    destination's Connect listener), the edge's public ports, the services' databases, and the
    metrics ports for Prometheus's namespace (values: prometheusNamespace)."""
    policies: list[Object] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("default-deny", "network-policy"),
            # The chart's pods only: the operators' (Consul's, Strimzi's) keep their own rules.
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}},
                "policyTypes": ["Ingress"],
            },
        }
    ]
    for intention in intentions:
        if intention.destination == "*" or not intention.allowed():
            continue
        policies.append(
            _allow(
                f"{intention.destination}-from-mesh",
                intention.destination,
                [{"podSelector": {"matchLabels": selector(s)}} for s in intention.allowed()],
                [{"port": CONNECT_INBOUND_PORT, "protocol": "TCP"}],
            )
        )
    edge = topology.edge.instances[0]
    policies.append(
        _allow(
            "edge-from-anywhere",
            EDGE,
            [],
            [
                {"port": edge.http_port, "protocol": "TCP"},
                {"port": edge.https_port, "protocol": "TCP"},
                {"port": topology.edge.https_port, "protocol": "UDP"},
            ],
        )
    )
    ports = topology.jaeger.ports
    policies.append(
        _allow(
            "jaeger-from-chart",
            JAEGER,
            [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}}}],
            [{"port": port, "protocol": "TCP"} for port in (ports.otlp_grpc, ports.otlp_http)],
        )
    )
    # web's trace view reads Jaeger's query API (mesh/wiring.py).
    policies.append(
        _allow(
            "jaeger-from-web",
            JAEGER,
            [{"podSelector": {"matchLabels": selector(WEB)}}],
            [{"port": ports.ui, "protocol": "TCP"}],
        )
    )
    database_users = [s.name for s in topology.services if s.database]
    database_users += [w.name for w in topology.workers]
    policies.append(
        _allow(
            "postgres-from-services",
            POSTGRES,
            [{"podSelector": {"matchLabels": selector(name)}} for name in database_users],
            [{"port": topology.postgres_port, "protocol": "TCP"}],
        )
    )
    return policies


def _allow(name: str, target: str, peers: list[Object], ports: list[Object]) -> Object:
    rule: Object = {"ports": ports}
    if peers:
        rule["from"] = peers
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, "network-policy"),
        "spec": {
            "podSelector": {"matchLabels": selector(target)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


POSTGRES_INIT = "postgres-init"
POSTGRES_INIT_DIR = "/docker-entrypoint-initdb.d"
POSTGRES_PASSWORDS_DIR = f"{kube_wiring.SECRETS_DIR}/passwords"


def postgres_init_script(topology: Topology) -> str:
    """Each service's role (its password the chart's Secret's) and database, held to least
    privilege as natively (mesh/components/postgres.py's ensure_databases): run by the postgres
    image once, when it makes the data directory."""
    roles = " ".join(postgres.service_roles(topology))
    psql = 'psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres'
    return f"""#!/bin/sh
set -eu
for role in {roles}; do
  # An assignment of its own: a password that cannot be read stops the script (set -e).
  password=$(cat "{POSTGRES_PASSWORDS_DIR}/$role-password")
  {psql} --set role="$role" --set password="$password" <<'SQL'
CREATE ROLE :"role" WITH {postgres.ROLE_ATTRIBUTES} PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
for database in {" ".join(postgres.SYSTEM_DATABASES)}; do
  {psql} --set database="$database" <<'SQL'
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
done
"""


def postgres_objects(topology: Topology) -> list[Object]:
    """One Postgres as a StatefulSet on the topology's port (the native runtime's Patroni pair
    is not here yet: docs/kubernetes.md), with the services' roles and databases."""
    port = topology.postgres_port
    probes = _probes({"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-p", str(port)]}})
    passwords = [
        {"key": key, "path": key}
        for key in map(kube_wiring.password_key, postgres.service_roles(topology))
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(POSTGRES_INIT, "database"),
            "data": {"10-service-roles.sh": postgres_init_script(topology)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(POSTGRES, "database"),
            "spec": {
                "clusterIP": "None",
                "selector": selector(POSTGRES),
                "ports": [{"name": "postgres", "port": port, "targetPort": "postgres"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(POSTGRES, "database"),
            "spec": {
                "serviceName": POSTGRES,
                "replicas": 1,
                "selector": {"matchLabels": selector(POSTGRES)},
                "template": {
                    "metadata": {
                        "labels": labels(POSTGRES, "database"),
                        "annotations": {"consul.hashicorp.com/connect-inject": "false"},
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            **POD_SECURITY,
                            "runAsUser": POSTGRES_UID,
                            "runAsGroup": POSTGRES_UID,
                            "fsGroup": POSTGRES_UID,
                        },
                        "containers": [
                            {
                                "name": POSTGRES,
                                "image": value("image", "postgres"),
                                "args": ["-p", str(port), *postgres.server_flags()],
                                "ports": [{"name": "postgres", "containerPort": port}],
                                "env": [
                                    {
                                        "name": "POSTGRES_PASSWORD",
                                        "valueFrom": {
                                            "secretKeyRef": {
                                                "name": POSTGRES_SECRET,
                                                "key": "password",
                                            }
                                        },
                                    },
                                    {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
                                ],
                                **probes,
                                "resources": block("postgres", "resources"),
                                "securityContext": {
                                    **CONTAINER_SECURITY,
                                    # initdb and the server write outside the data volume.
                                    "readOnlyRootFilesystem": False,
                                },
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                                    {
                                        "name": "init",
                                        "mountPath": POSTGRES_INIT_DIR,
                                        "readOnly": True,
                                    },
                                    {
                                        "name": "passwords",
                                        "mountPath": POSTGRES_PASSWORDS_DIR,
                                        "readOnly": True,
                                    },
                                ],
                            }
                        ],
                        "volumes": [
                            # Executable: the image runs it (rather than sourcing it).
                            {
                                "name": "init",
                                "configMap": {"name": POSTGRES_INIT, "defaultMode": 0o555},
                            },
                            {
                                "name": "passwords",
                                "secret": {
                                    "secretName": kube_wiring.CREDENTIALS_SECRET,
                                    "items": passwords,
                                    "defaultMode": kube_wiring.SECRET_MODE,
                                },
                            },
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": value("postgres", "storage")}},
                        },
                    }
                ],
            },
        },
    ]


def kafka_objects(topology: Topology, clients: tuple[KafkaClient, ...]) -> list[Object]:
    """Strimzi's Kafka (KRaft, SCRAM, simple authorization, RF 3, min ISR 2) and its node pool
    of combined controller+broker nodes, one per node where possible. Strimzi's listener
    NetworkPolicy lets in the Kafka clients of mesh/kafka/topics.yaml only."""
    port = topology.kafka.nodes[0].port
    cluster_label = {"strimzi.io/cluster": KAFKA_CLUSTER}
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "Kafka",
            "metadata": {
                **meta(KAFKA_CLUSTER, "kafka"),
                "annotations": {
                    "strimzi.io/kraft": "enabled",
                    "strimzi.io/node-pools": "enabled",
                },
            },
            "spec": {
                "kafka": {
                    "version": value("kafka", "version"),
                    "listeners": [
                        {
                            "name": "scram",
                            "port": port,
                            "type": "internal",
                            "tls": True,
                            "authentication": {"type": "scram-sha-512"},
                            "networkPolicyPeers": [
                                {"podSelector": {"matchLabels": selector(c.principal)}}
                                for c in clients
                            ],
                        }
                    ],
                    "authorization": {"type": "simple"},
                    "config": {
                        "default.replication.factor": 3,
                        "min.insync.replicas": 2,
                        "offsets.topic.replication.factor": 3,
                        "transaction.state.log.replication.factor": 3,
                        "transaction.state.log.min.isr": 2,
                        "auto.create.topics.enable": False,
                    },
                },
                "entityOperator": {"topicOperator": {}, "userOperator": {}},
            },
        },
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaNodePool",
            "metadata": {**meta("brokers", "kafka"), "labels": {**labels("brokers", "kafka"),
                                                                 **cluster_label}},
            "spec": {
                "replicas": value("kafka", "replicas"),
                "roles": ["controller", "broker"],
                "storage": {
                    "type": "jbod",
                    "volumes": [
                        {
                            "id": 0,
                            "type": "persistent-claim",
                            "size": value("kafka", "storage"),
                            "deleteClaim": False,
                            "kraftMetadata": "shared",
                        }
                    ],
                },
                "resources": block("kafka", "resources"),
                "jvmOptions": {"-Xms": value("kafka", "heap"), "-Xmx": value("kafka", "heap")},
                "template": {
                    "pod": {
                        "topologySpreadConstraints": [
                            {**c, "labelSelector": {"matchLabels": {
                                "strimzi.io/cluster": KAFKA_CLUSTER,
                                "strimzi.io/pool-name": "brokers"}}}
                            for c in _spread("brokers")
                        ]
                    }
                },
            },
        },
    ]  # fmt: skip


def topic_objects(topics: tuple[TopicSpec, ...]) -> list[Object]:
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaTopic",
            "metadata": {
                "name": topic.name,
                "labels": {
                    **labels(topic.name, "kafka-topic"),
                    "strimzi.io/cluster": KAFKA_CLUSTER,
                },
            },
            "spec": {
                "partitions": topic.partitions,
                "replicas": topic.replication_factor,
                "config": {"min.insync.replicas": topic.min_insync_replicas},
            },
        }
        for topic in topics
    ]


_RESOURCE_TYPES = {Resource.TOPIC: "topic", Resource.GROUP: "group", Resource.CLUSTER: "cluster"}
_OPERATIONS = {
    Operation.READ: "Read",
    Operation.WRITE: "Write",
    Operation.DESCRIBE: "Describe",
    Operation.IDEMPOTENT_WRITE: "IdempotentWrite",
}


def _acl(binding: AclBinding) -> Object:
    resource: Object = {"type": _RESOURCE_TYPES[binding.resource]}
    if binding.resource != Resource.CLUSTER:
        resource["name"] = binding.name
        resource["patternType"] = "prefix" if binding.pattern == Pattern.PREFIXED else "literal"
    return {"resource": resource, "operations": [_OPERATIONS[binding.operation]]}


def user_objects(clients: tuple[KafkaClient, ...]) -> list[Object]:
    """A KafkaUser (SCRAM) per principal, with the ACLs the native runtime creates for it."""
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaUser",
            "metadata": {
                "name": client.principal,
                "labels": {
                    **labels(client.principal, "kafka-user"),
                    "strimzi.io/cluster": KAFKA_CLUSTER,
                },
            },
            "spec": {
                "authentication": {"type": "scram-sha-512"},
                "authorization": {
                    "type": "simple",
                    "acls": [_acl(b) for b in sorted(client_bindings(client))],
                },
            },
        }
        for client in clients
    ]
