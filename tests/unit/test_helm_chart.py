"""The Helm chart's static checks (tests/kube installs it into a real API server, in a tier of
its own: `make test-kube`): generated from the topology, `helm lint` clean, rendered by `helm
template` for each values file into objects that kubeconform validates strictly against the
Kubernetes and Strimzi schemas, and holding every service, port, upstream, intention, topic
and Kafka ACL of the native runtime. The pinned helm, kubeconform and schemas come from `mesh
install`."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from mesh.components.consul import CONFIG_ENTRIES_DIR
from mesh.components.edge import envoy_config
from mesh.components.kafka import load_topics
from mesh.components.kafka_acl import load_clients
from mesh.components.postgres import server_flags, service_roles
from mesh.envoy_tracing import OTLP_CLUSTER
from mesh.helm import wiring as kube_wiring
from mesh.helm.chart import CHART_DIR, VALUES_FILES, stale
from mesh.helm.manifests import EDGE_FILES
from mesh.runtime import protos
from mesh.runtime.demo import CLI_CLIENT, DEMO_USERS
from mesh.runtime.kube_schemas import SCHEMA_LOCATION
from mesh.runtime.paths import StateDir, cache_dir
from mesh.runtime.provision import HELM, KUBE_SCHEMAS, KUBECONFORM
from mesh.runtime.tls import ensure_edge_certs, new_ca
from mesh.topology import Topology, load
from services.auth.config import AuthSettings
from services.common.config import ServiceSettings
from services.common.messaging.security import sasl_options
from tests.chart_references import keys_of, operators_secrets, owned, pod_specs, references
from tests.native_intentions import native_intentions
from tests.unit.test_edge_envoy import envoy_binary

# consul-k8s's CRDs: no registry reachable from here serves them (deploy/helm/SCHEMAS.md), so
# kubeconform skips these kinds, and only these (test_only_consul_kinds_go_unvalidated).
UNVALIDATED_KINDS = ("ServiceIntentions", "ServiceDefaults")

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = HELM.binaries(cache_dir())["helm"]
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def _template(values_file: str) -> str:
    done = _helm("template", "shop", str(CHART_DIR), "-f", str(CHART_DIR / values_file))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kubeconform(manifests: str) -> subprocess.CompletedProcess[str]:
    binary = KUBECONFORM.binaries(cache_dir())["kubeconform"]
    schemas = KUBE_SCHEMAS.binaries(cache_dir())["schemas"]
    return subprocess.run(
        [str(binary), "-strict", "-summary", "-schema-location", f"{schemas}/{SCHEMA_LOCATION}",
         "-skip", ",".join(UNVALIDATED_KINDS), "-"],
        input=manifests, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module", params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest) -> str:
    return _template(request.param)


@pytest.fixture(scope="module")
def objects() -> Objects:
    return [o for o in yaml.safe_load_all(_template("values.yaml")) if o]


def _of(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_committed_chart_is_the_one_the_topology_generates(topology: Topology) -> None:
    assert stale(topology) == [], "run `mesh helm`"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_passes_strictly_with_each_values_file(values_file: str) -> None:
    done = _helm("lint", "--strict", str(CHART_DIR), "-f", str(CHART_DIR / values_file))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rendered_object_is_valid_against_its_schema_strictly(rendered: str) -> None:
    kinds = [o["kind"] for o in yaml.safe_load_all(rendered) if o]
    skipped = sum(kind in UNVALIDATED_KINDS for kind in kinds)
    done = _kubeconform(rendered)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (
        f"{len(kinds)} resources found parsing stdin - Valid: {len(kinds) - skipped}, "
        f"Invalid: 0, Errors: 0, Skipped: {skipped}"
    )
    assert summary in done.stdout, done.stdout


def test_strict_validation_rejects_a_misspelt_field(objects: Objects) -> None:
    deployment = copy.deepcopy(_of(objects, "Deployment")["orders"])
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    done = _kubeconform(yaml.safe_dump(deployment))
    assert done.returncode == 1, done.stdout
    assert "replica" in done.stdout


def test_only_consul_kinds_go_unvalidated(objects: Objects) -> None:
    skipped = {o["kind"]: o["apiVersion"] for o in objects if o["kind"] in UNVALIDATED_KINDS}
    assert set(skipped) == set(UNVALIDATED_KINDS)
    assert set(skipped.values()) == {"consul.hashicorp.com/v1alpha1"}


def test_every_service_has_its_account_service_and_connect_deployment(
    topology: Topology, objects: Objects
) -> None:
    accounts, services = _of(objects, "ServiceAccount"), _of(objects, "Service")
    deployments = _of(objects, "Deployment")
    for service in topology.services:
        port = service.instances[0].port
        assert service.name in accounts
        assert [p["port"] for p in services[service.name]["spec"]["ports"]] == [port]
        pod = deployments[service.name]["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["consul.hashicorp.com/connect-inject"] == "true"
        assert annotations["consul.hashicorp.com/connect-service"] == service.name
        upstreams = annotations.get("consul.hashicorp.com/connect-service-upstreams", "")
        expected = {f"{u.service}:{u.local_bind_port}" for u in service.upstreams}
        assert set(filter(None, upstreams.split(","))) == expected
        container = pod["spec"]["containers"][0]
        assert {p["containerPort"] for p in container["ports"]} >= {port}
        assert pod["spec"]["serviceAccountName"] == service.name


def test_grpc_services_have_grpc_probes_and_http_ones_http_probes(
    topology: Topology, objects: Objects
) -> None:
    deployments = _of(objects, "Deployment")
    for service in topology.services:
        container = deployments[service.name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if service.protocol == "grpc":
                assert container[probe]["grpc"] == {"port": service.instances[0].port}
            else:
                assert container[probe]["httpGet"]["path"] == "/health"


def test_workers_run_without_sidecar_or_service(topology: Topology, objects: Objects) -> None:
    deployments, services = _of(objects, "Deployment"), _of(objects, "Service")
    for workers in topology.workers:
        pod = deployments[workers.name]["spec"]["template"]
        assert pod["metadata"]["annotations"]["consul.hashicorp.com/connect-inject"] == "false"
        assert pod["spec"]["containers"][0]["command"] == ["python", "-m", workers.module]
        assert workers.name not in services


def test_the_edge_is_behind_a_load_balancer_on_the_public_ports(
    topology: Topology, objects: Objects
) -> None:
    service = _of(objects, "Service")["edge"]
    assert service["spec"]["type"] == "LoadBalancer"
    ports = {(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]}
    edge = topology.edge
    assert ports == {(edge.http_port, "TCP"), (edge.https_port, "TCP"), (edge.https_port, "UDP")}
    pod = _of(objects, "Deployment")["edge"]["spec"]["template"]
    upstreams = pod["metadata"]["annotations"]["consul.hashicorp.com/connect-service-upstreams"]
    assert upstreams.split(",") == [
        f"{u.service}:{u.local_bind_port}" for u in edge.instances[0].upstreams
    ]
    keys = {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys


def test_every_deployment_spreads_its_pods_one_per_node(objects: Objects) -> None:
    for name, deployment in _of(objects, "Deployment").items():
        pod = deployment["spec"]["template"]
        constraints = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
        by_host = constraints["kubernetes.io/hostname"]
        assert (by_host["maxSkew"], by_host["whenUnsatisfiable"]) == (1, "DoNotSchedule"), name
        assert (
            by_host["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        )
        assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_the_service_intentions_are_the_native_runtimes(objects: Objects) -> None:
    crs = {o["spec"]["destination"]["name"]: o["spec"]["sources"] for o in objects
           if o["kind"] == "ServiceIntentions"}  # fmt: skip
    assert crs == dict(native_intentions())
    assert crs["*"] == [{"name": "*", "action": "deny"}]


def test_the_service_defaults_carry_the_native_runtimes_upstream_limits_and_timeouts(
    objects: Objects,
) -> None:
    specs = {name: cr["spec"] for name, cr in _of(objects, "ServiceDefaults").items()}
    native = {p.stem.removeprefix("service-defaults-") for p in
              CONFIG_ENTRIES_DIR.glob("service-defaults-*.hcl")}  # fmt: skip
    assert specs.keys() == native
    edge = specs["edge"]["upstreamConfig"]
    assert edge["defaults"]["limits"] == {
        "maxConnections": 32, "maxPendingRequests": 1024, "maxConcurrentRequests": 32}  # fmt: skip
    assert edge["defaults"]["passiveHealthCheck"]["maxEjectionPercent"] == 50
    websockets = {"maxConnections": 1024, "maxPendingRequests": 1024, "maxConcurrentRequests": 1024}
    assert edge["overrides"] == [{"name": "notifications", "limits": websockets}]
    assert specs["orders"]["upstreamConfig"]["defaults"]["connectTimeoutMs"] == 1000
    assert specs["orders"]["upstreamConfig"]["defaults"]["passiveHealthCheck"] == {
        "interval": "1s", "maxFailures": 5, "enforcingConsecutive5xx": 100,
        "maxEjectionPercent": 50, "baseEjectionTime": "10s"}  # fmt: skip
    assert specs["auth"] == {"protocol": "http", "localRequestTimeoutMs": 180000}
    assert specs["users"] == {"protocol": "grpc"}


def test_network_policies_deny_by_default_and_let_in_what_the_intentions_allow(
    objects: Objects,
) -> None:
    policies = _of(objects, "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "shopmesh"}},
        "policyTypes": ["Ingress"],
    }
    for workload in [*_of(objects, "Deployment").values(), *_of(objects, "StatefulSet").values()]:
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/part-of"] == "shopmesh"
    for destination, sources in native_intentions():
        allowed = {s["name"] for s in sources if s["action"] == "allow"}
        if destination == "*":
            continue
        rule = policies[f"{destination}-from-mesh"]["spec"]["ingress"][0]
        peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
        assert peers == allowed, destination


def test_every_topic_and_its_dlq_is_a_kafka_topic_with_rf_3_and_min_isr_2(
    objects: Objects,
) -> None:
    crs = _of(objects, "KafkaTopic")
    for topic in load_topics():
        spec = crs[topic.name]["spec"]
        assert (spec["partitions"], spec["replicas"]) == (topic.partitions, 3)
        assert spec["config"] == {"min.insync.replicas": 2}
    kafka = _of(objects, "Kafka")["kafka"]["spec"]["kafka"]
    assert kafka["config"]["default.replication.factor"] == 3
    assert kafka["config"]["min.insync.replicas"] == 2
    assert _of(objects, "KafkaNodePool")["brokers"]["spec"]["replicas"] == 3


def test_every_kafka_client_is_a_scram_user_with_its_topics_and_groups(objects: Objects) -> None:
    users = _of(objects, "KafkaUser")
    for client in load_clients():
        spec = users[client.principal]["spec"]
        assert spec["authentication"] == {"type": "scram-sha-512"}
        granted: dict[str, set[str]] = {}
        for acl in spec["authorization"]["acls"]:
            key = f"{acl['resource']['type']}:{acl['resource'].get('name', '')}"
            granted.setdefault(key, set()).update(acl["operations"])
        for topic in client.produces:
            assert {"Write", "Describe"} <= granted[f"topic:{topic}"]
        for topic in client.consumes:
            assert {"Read", "Describe"} <= granted[f"topic:{topic}"]
            assert "Write" in granted[f"topic:{topic}.dlq"]
        for group in client.groups:
            assert "Read" in granted[f"group:{group.rstrip('*')}"]


def test_every_pod_runs_as_non_root_without_privilege_escalation(objects: Objects) -> None:
    for workload in [*_of(objects, "Deployment").values(), *_of(objects, "StatefulSet").values()]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in container["resources"]["limits"]


def test_every_deployment_has_a_disruption_budget(objects: Objects) -> None:
    budgets = _of(objects, "PodDisruptionBudget")
    for name, deployment in _of(objects, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == selector


def test_every_service_and_the_edge_scale_on_cpu_and_the_workers_on_their_lag(
    topology: Topology, objects: Objects
) -> None:
    hpas = _of(objects, "HorizontalPodAutoscaler")
    deployments = _of(objects, "Deployment")
    workers = {w.name: w for w in topology.workers}
    assert set(hpas) == {s.name for s in topology.services} | {"edge"} | set(workers)
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["minReplicas"] == deployments[name]["spec"]["replicas"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        if name in workers:
            assert metric["external"]["metric"] == {
                "name": "shopmesh_kafka_consumer_lag",
                "selector": {"matchLabels": {"group": workers[name].group}},
            }
        else:
            assert metric["resource"]["name"] == "cpu"


def test_a_worker_scales_no_further_than_the_partitions_it_reads() -> None:
    large = yaml.safe_load((CHART_DIR / "values-large.yaml").read_text())
    partitions = {t.name: t.partitions for t in load_topics()}
    (worker,) = (c for c in load_clients() if c.principal == "payments-worker")
    assert large["workloads"]["payments-worker"]["maxReplicas"] == min(
        partitions[t] for t in worker.consumes
    )


def test_the_large_values_run_more_of_everything_than_the_small() -> None:
    small = yaml.safe_load((CHART_DIR / "values-small.yaml").read_text())
    large = yaml.safe_load((CHART_DIR / "values-large.yaml").read_text())
    for name, workload in large["workloads"].items():
        assert workload["replicas"] >= small["workloads"][name]["replicas"]
    assert large["kafka"]["replicas"] > small["kafka"]["replicas"]


def test_the_charts_secrets_are_generated_at_install_never_in_the_chart(
    objects: Objects,
) -> None:
    secrets = _of(objects, "Secret")
    assert set(secrets) == {"postgres-superuser", "shopmesh-credentials", "edge-tls"}
    again = _of([o for o in yaml.safe_load_all(_template("values.yaml")) if o], "Secret")
    chart_text = "".join(p.read_text() for p in Path(CHART_DIR).rglob("*.yaml"))
    for name, secret in secrets.items():
        assert "stringData" not in secret, name
        for key, value in secret["data"].items():
            assert value != again[name]["data"][key], (name, key)
            assert value not in chart_text, (name, key)
    seed = json.loads(base64.b64decode(secrets["shopmesh-credentials"]["data"]["auth-seed.json"]))
    assert set(seed["users"]) == set(DEMO_USERS)
    assert set(seed["clients"]) == {CLI_CLIENT}


# The Secrets' keys as their makers document them: Strimzi's KafkaUser and cluster CA Secrets,
# consul-k8s's CA Secret, and the Consul tokens the installer makes (docs/kubernetes.md).
OPERATOR_KEYS = {"password", "ca.crt", "tls.crt", "token"}


def test_every_secret_and_config_map_a_pod_names_is_the_charts_or_an_operators(
    objects: Objects,
) -> None:
    chart, outside = owned(objects), operators_secrets(objects)
    named = references(objects)
    for ref in named:
        if (ref.kind, ref.name) in chart:
            assert ref.key is None or ref.key in keys_of(chart[ref.kind, ref.name]), ref
        else:
            assert ref.kind == "Secret" and ref.name in outside, ref
            assert ref.key in OPERATOR_KEYS, ref
    # Each is named by some pod, and every ConfigMap and Secret of the chart is mounted.
    assert {r.name for r in named} == outside | {name for _, name in chart}


def _container(objects: Objects, name: str) -> dict[str, Any]:
    container: dict[str, Any] = _of(objects, "Deployment")[name]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _mounted_file(objects: Objects, workload: str, path: str) -> tuple[str, str] | None:
    """The (kind, name) of the Secret or ConfigMap whose key `path` is in `workload`'s pod."""
    pod = {**dict(pod_specs(objects))}[workload]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in pod["containers"][0]["volumeMounts"]:
        folder, _, key = path.rpartition("/")
        if folder != mount["mountPath"]:
            continue
        volume = volumes[mount["name"]]
        if "secret" in volume:
            source, kind, name = volume["secret"], "Secret", volume["secret"]["secretName"]
        else:
            source, kind, name = volume["configMap"], "ConfigMap", volume["configMap"]["name"]
        items = [item["path"] for item in source.get("items", [])]
        if not items or key in items:
            return kind, name
    return None


def test_every_process_reads_each_file_it_is_given_from_a_secret_mounted_into_it(
    topology: Topology, objects: Objects
) -> None:
    processes = [s.name for s in topology.services] + [w.name for w in topology.workers]
    for name in processes:
        env = _container(objects, name)["env"]
        files = [e for e in env if e["name"].endswith("_FILE")]
        assert files, name
        for variable in files:
            assert _mounted_file(objects, name, variable["value"]) is not None, (name, variable)


def _runnable_env(env: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    """A container's environment as its process would see it: each `$(NAME)` expanded as
    the kubelet does (from variables defined before it), each Secret file written to
    `tmp_path` (a CA certificate where one is asked for), the pod's name as its instance."""
    values: dict[str, str] = {}
    ca = new_ca("a test CA")[1].public_bytes(Encoding.PEM)
    for variable in env:
        name, source = variable["name"], variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            values[name] = f"a-secret-{source['secretKeyRef']['key']}"
        elif "fieldRef" in source:
            values[name] = "orders-7d9f8c6b5-x2x7q"
        else:
            value = variable["value"]
            for reference in re.findall(r"\$\((\w+)\)", value):
                assert reference in values, f"{name} refers to {reference}, not defined before it"
                value = value.replace(f"$({reference})", values[reference])
            values[name] = value
        if name.endswith("_FILE"):
            file = tmp_path / name
            file.write_bytes(ca if name.endswith("CA_FILE") else b'{"users": {}, "clients": {}}')
            values[name] = str(file)
    return values


def test_every_service_starts_from_its_containers_environment_wired_for_kubernetes(
    topology: Topology, objects: Objects, tmp_path: Path
) -> None:
    kafka = _of(objects, "Kafka")["kafka"]
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    postgres = _of(objects, "Service")["postgres"]["spec"]["ports"][0]["port"]
    jaeger = {p["port"] for p in _of(objects, "Service")["jaeger"]["spec"]["ports"]}
    for service in topology.services:
        env = _runnable_env(_container(objects, service.name)["env"], tmp_path)
        settings = ServiceSettings.from_env(env, database=service.database is not None)
        # consul-k8s registers the pod's service: the instance does not.
        assert settings.registration is None
        assert settings.instance == "orders-7d9f8c6b5-x2x7q"
        assert settings.bind_host == "0.0.0.0"
        assert settings.consul_http_addr == "https://consul-server:8501"
        assert {u.name for u in settings.upstreams} == {u.service for u in service.upstreams}
        otlp = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (otlp.hostname, otlp.port in jaeger) == ("jaeger", True)
        if service.database:
            url = urlsplit(settings.database_url)
            assert (url.hostname, url.port) == ("postgres", postgres)
            assert url.password == f"a-secret-{service.database}-password"
            assert env["SHOPMESH_KAFKA_BOOTSTRAP"] == f"kafka-kafka-bootstrap:{listener['port']}"
            assert listener["tls"] is True
            assert sasl_options(env)["security_protocol"] == "SASL_SSL"
        if service.name == "auth":
            auth = AuthSettings.from_env(env)
            assert auth.issuer == f"https://shopmesh.example.com:{topology.edge.https_port}/auth"


def test_no_secret_is_a_literal_value_of_any_container(objects: Objects) -> None:
    for workload, pod in pod_specs(objects):
        for container in pod["containers"]:
            for variable in container.get("env", []):
                name = variable["name"]
                if re.search("PASSWORD|TOKEN|SECRET|SEED|KEY", name) and "value" in variable:
                    assert name.endswith("_FILE"), (workload, name)


def test_the_edge_config_map_holds_the_edge_config_through_the_kubernetes_placement(
    topology: Topology, objects: Objects
) -> None:
    config_map = _of(objects, "ConfigMap")["edge-envoy"]
    kube = kube_wiring.placement("shopmesh.example.com", "kafka")
    edge = topology.edge.instances[0]
    expected = envoy_config(topology, kube, EDGE_FILES, edge)
    assert json.loads(config_map["data"]["envoy.json"]) == expected
    assert base64.b64decode(config_map["binaryData"]["protos.pb"]) == (
        protos.DESCRIPTOR_SET.read_bytes()
    )
    args = _container(objects, "edge")["args"]
    assert args[args.index("-c") + 1] == "/etc/envoy/envoy.json"
    for path in ("/etc/envoy/envoy.json", str(EDGE_FILES.descriptor_set)):
        assert _mounted_file(objects, "edge", path) == ("ConfigMap", "edge-envoy")
    for path in (EDGE_FILES.server_cert, EDGE_FILES.server_key):
        assert _mounted_file(objects, "edge", str(path)) == ("Secret", "edge-tls")
    clusters = {c["name"]: c for c in expected["static_resources"]["clusters"]}
    # No rate-limit service runs in the chart (yet): no filter, no cluster.
    assert "ratelimit" not in clusters
    assert "envoy.filters.http.ratelimit" not in config_map["data"]["envoy.json"]
    assert clusters[OTLP_CLUSTER]["type"] == "STRICT_DNS"


def test_envoy_accepts_the_charts_edge_config(objects: Objects, tmp_path: Path) -> None:
    config_map = _of(objects, "ConfigMap")["edge-envoy"]
    # Any certificate: Envoy validates the config, not who the certificate names.
    certs = ensure_edge_certs(StateDir(tmp_path), "127.0.0.1")
    (tmp_path / "protos.pb").write_bytes(base64.b64decode(config_map["binaryData"]["protos.pb"]))
    text = config_map["data"]["envoy.json"]
    for pod_path, here in (
        (EDGE_FILES.server_cert, certs.server_cert),
        (EDGE_FILES.server_key, certs.server_key),
        (EDGE_FILES.descriptor_set, tmp_path / "protos.pb"),
        (EDGE_FILES.admin_socket, tmp_path / "admin.sock"),
    ):
        text = text.replace(f'"{pod_path}"', f'"{here}"')
    config = tmp_path / "envoy.json"
    config.write_text(text)
    proc = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_postgres_runs_with_the_native_nodes_cache_and_connections(objects: Objects) -> None:
    pod = _of(objects, "StatefulSet")["postgres"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][-4:] == server_flags()


def test_postgres_makes_each_services_role_with_its_password_from_the_charts_secret(
    topology: Topology, objects: Objects
) -> None:
    script = _of(objects, "ConfigMap")["postgres-init"]["data"]["10-service-roles.sh"]
    assert f"for role in {' '.join(service_roles(topology))}; do" in script
    pod = _of(objects, "StatefulSet")["postgres"]["spec"]["template"]["spec"]
    (passwords,) = (v["secret"] for v in pod["volumes"] if "secret" in v)
    assert passwords["secretName"] == "shopmesh-credentials"
    assert {i["key"] for i in passwords["items"]} == {
        f"{role}-password" for role in service_roles(topology)
    }
