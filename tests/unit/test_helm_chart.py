"""The Helm chart's static checks (tests/kube installs it into a real API server, in a tier of
its own: `make test-kube`): generated from the topology, `helm lint` clean, rendered by `helm
template` for each values file into objects that kubeconform validates strictly against the
Kubernetes and Strimzi schemas, and holding every service, port, upstream, intention, topic
and Kafka ACL of the native runtime. The pinned helm, kubeconform and schemas come from `mesh
install`."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.components.kafka import load_topics
from mesh.components.kafka_acl import load_clients
from mesh.helm.chart import CHART_DIR, VALUES_FILES, stale
from mesh.runtime.kube_schemas import SCHEMA_LOCATION
from mesh.runtime.paths import cache_dir
from mesh.runtime.provision import HELM, KUBE_SCHEMAS, KUBECONFORM
from mesh.topology import Topology, load
from tests.native_intentions import native_intentions

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


def test_the_postgres_password_is_generated_at_install_never_in_the_chart(
    objects: Objects,
) -> None:
    secret = _of(objects, "Secret")["postgres-superuser"]
    again = _of([o for o in yaml.safe_load_all(_template("values.yaml")) if o], "Secret")
    assert secret["data"]["password"] != again["postgres-superuser"]["data"]["password"]
    chart_text = "".join(p.read_text() for p in Path(CHART_DIR).rglob("*.yaml"))
    assert secret["data"]["password"] not in chart_text
