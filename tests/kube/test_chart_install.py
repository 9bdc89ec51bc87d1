"""Issue #16's real-API-server tier: the chart, with Strimzi's CRDs and stand-ins for
consul-k8s's (tests/kube/consul_standins.py), installed by the pinned helm into a real
kube-apiserver with etcd, kube-controller-manager, kube-scheduler and kwok's fake nodes
(tests/kube/conftest.py), once per values file, each into a namespace of its own. Then what
the cluster made of it: every object accepted (strictly) and stored, every replica created by
the controllers and bound by the scheduler as the spread rules say, the NetworkPolicies
selecting the pods the intentions name, the autoscalers reaching their Deployments, and the
disruption budgets refusing the eviction that would break them. No container runs: kwok marks
the pods Running. `make test-kube`; docs/kubernetes.md says what this cannot show."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from mesh.helm.chart import CHART_DIR
from mesh.helm.manifests import CONNECT_INBOUND_PORT
from mesh.topology import Topology
from tests.chart_references import keys_of, operators_secrets, owned, references
from tests.kube.api import Api, Object
from tests.kube.conftest import NODES, Helm
from tests.native_intentions import native_intentions
from tests.support import wait_for

SIZES = {"values-small.yaml": "small", "values-large.yaml": "large"}
ROLLOUT_TIMEOUT_S = 300.0
RELEASE = "shop"


@dataclass(frozen=True)
class Release:
    namespace: str
    values: dict[str, Any]
    objects: list[Object]  # as installed: `helm get manifest`


def _create_namespace(api: Api, name: str) -> None:
    done = api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert done.status_code == 201, done.text


def _postgres_volume(api: Api, namespace: str, storage: str) -> None:
    """The volume a cluster's provisioner would make for Postgres's claim (no provisioner
    runs here), bound to that claim only."""
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-postgres-data"},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"/var/lib/shopmesh-kube-test/{namespace}"},
            "claimRef": {"namespace": namespace, "name": "data-postgres-0"},
        },
    }
    done = api.create(volume)
    assert done.status_code == 201, done.text


def _documents(text: str) -> list[Object]:
    return [o for o in yaml.safe_load_all(text) if o]


@pytest.fixture(scope="module", params=list(SIZES))
def release(request: pytest.FixtureRequest, api: Api, crds: list[str], helm: Helm) -> Release:
    values_file: str = request.param
    namespace = SIZES[values_file]
    values = yaml.safe_load((CHART_DIR / values_file).read_text())
    _create_namespace(api, namespace)
    _postgres_volume(api, namespace, values["postgres"]["storage"])
    done = helm("install", RELEASE, CHART_DIR, "-f", CHART_DIR / values_file,
                "--namespace", namespace, "--wait", "--timeout", "10m")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = helm("get", "manifest", RELEASE, "--namespace", namespace)
    assert manifest.returncode == 0, manifest.stderr
    return Release(namespace, values, _documents(manifest.stdout))


def _replicas(release: Release, workload: str) -> int:
    replicas: int = release.values["workloads"][workload]["replicas"]
    return replicas


def _name(o: Object) -> str:
    name: str = o["metadata"]["name"]
    return name


@pytest.mark.parametrize("values_file", SIZES)
def test_the_api_server_accepts_every_rendered_object_strictly(
    values_file: str, api: Api, crds: list[str], helm: Helm
) -> None:
    namespace = f"strict-{SIZES[values_file]}"
    _create_namespace(api, namespace)
    done = helm("template", RELEASE, CHART_DIR, "-f", CHART_DIR / values_file,
                "--namespace", namespace)  # fmt: skip
    assert done.returncode == 0, done.stderr
    objects = _documents(done.stdout)
    refused = {}
    for obj in objects:
        answer = api.create(obj, namespace, dryRun="All", fieldValidation="Strict")
        if answer.status_code != 201:
            refused[f"{obj['kind']}/{_name(obj)}"] = answer.json().get("message")
    assert refused == {}
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "NetworkPolicy", "PodDisruptionBudget", "Kafka", "KafkaUser",
            "ServiceIntentions"} <= kinds  # fmt: skip


def test_strict_validation_refuses_a_misspelt_field_of_a_builtin_and_a_strimzi_kind(
    api: Api, crds: list[str], helm: Helm
) -> None:
    namespace = "strict-misspelt"
    _create_namespace(api, namespace)
    objects = _documents(helm("template", RELEASE, CHART_DIR).stdout)
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    topic = copy.deepcopy(next(o for o in objects if o["kind"] == "KafkaTopic"))
    topic["spec"]["partition"] = topic["spec"].pop("partitions")
    for obj, field in ((deployment, "replica"), (topic, "partition")):
        answer = api.create(obj, namespace, dryRun="All", fieldValidation="Strict")
        # 400: the strict decoder's refusal, before admission
        assert answer.status_code == 400, answer.text
        assert f'unknown field "spec.{field}"' in answer.json()["message"]


def test_helm_installs_the_chart_and_every_object_is_stored(
    release: Release, api: Api, helm: Helm
) -> None:
    missing = [
        f"{o['kind']}/{_name(o)}"
        for o in release.objects
        if api.http.get(api.path(o, release.namespace)).status_code != 200
    ]
    assert missing == []
    status = helm("status", RELEASE, "--namespace", release.namespace, "-o", "json")
    assert yaml.safe_load(status.stdout)["info"]["status"] == "deployed"
    assert {o["kind"] for o in release.objects} >= {"Kafka", "KafkaNodePool", "KafkaTopic",
                                                     "KafkaUser", "ServiceIntentions",
                                                     "ServiceDefaults", "StatefulSet"}  # fmt: skip


def test_every_config_map_and_secret_the_chart_owns_is_stored_with_what_its_pods_take(
    release: Release, api: Api
) -> None:
    """What a pod names exists once installed if the chart owns it, with the key the pod
    takes; the rest are the operators' and the installer's (mesh/helm/wiring.py), which are
    not here (no operator runs)."""
    chart = owned(release.objects)
    outside = operators_secrets(release.objects)

    def stored(kind: str, name: str) -> Object | None:
        # Secret -> secrets, ConfigMap -> configmaps
        path = f"/api/v1/namespaces/{release.namespace}/{kind.lower()}s/{name}"
        answer = api.http.get(path)
        return answer.json() if answer.status_code == 200 else None

    missing = []
    for ref in references(release.objects):
        if (ref.kind, ref.name) not in chart:
            assert ref.kind == "Secret" and ref.name in outside, ref
            continue
        found = stored(ref.kind, ref.name)
        if found is None or (ref.key is not None and ref.key not in keys_of(found)):
            missing.append(ref)
    assert missing == []
    # Generated by the install: every key of each holds something.
    for kind, name in chart:
        found = stored(kind, name)
        assert found is not None, (kind, name)
        data = {**found.get("data", {}), **found.get("binaryData", {})}
        assert data and all(data.values()), (kind, name)


def _owner(obj: Object) -> tuple[str, str] | None:
    owners = obj["metadata"].get("ownerReferences", [])
    controller = next((o for o in owners if o.get("controller")), None)
    return (controller["kind"], controller["name"]) if controller else None


def _workloads_of_pods(api: Api, namespace: str) -> dict[str, str]:
    """Each pod's Deployment or StatefulSet, by the controllers' owner references."""
    replica_sets = api.of_kind("apps/v1", "ReplicaSet", namespace)
    workloads = {}
    for pod in api.pods(namespace):
        owner = _owner(pod)
        if owner and owner[0] == "ReplicaSet":
            owner = _owner(replica_sets[owner[1]])
        assert owner is not None, f"pod {_name(pod)} has no controller"
        workloads[_name(pod)] = owner[1]
    return workloads


def _rolled_out(api: Api, release: Release) -> bool:
    for name, deployment in api.of_kind("apps/v1", "Deployment", release.namespace).items():
        status = deployment.get("status", {})
        if status.get("readyReplicas") != _replicas(release, name) or status.get("replicas") != (
            _replicas(release, name)
        ):
            return False
    return True


def test_the_controllers_create_every_replica_and_the_scheduler_binds_it(
    release: Release, api: Api
) -> None:
    ns = release.namespace
    wait_for(lambda: _rolled_out(api, release), timeout=ROLLOUT_TIMEOUT_S,
             what=f"every Deployment of {ns} ready", interval=0.5)  # fmt: skip
    workloads = _workloads_of_pods(api, ns)
    deployments = api.of_kind("apps/v1", "Deployment", ns)
    for name in deployments:
        pods = [p for p in api.pods(ns) if workloads[_name(p)] == name]
        assert len(pods) == _replicas(release, name), name
        for pod in pods:
            assert pod["spec"]["nodeName"] in {n.name for n in NODES}, _name(pod)
            assert pod["status"]["phase"] == "Running", _name(pod)
    postgres = api.http.get(f"/api/v1/namespaces/{ns}/pods/postgres-0").raise_for_status().json()
    assert workloads["postgres-0"] == "postgres"
    assert postgres["spec"]["nodeName"] in {n.name for n in NODES}
    assert postgres["status"]["phase"] == "Running"
    claim = api.http.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/data-postgres-0")
    assert claim.raise_for_status().json()["status"]["phase"] == "Bound"


def test_every_deployment_spreads_its_replicas_one_per_node(release: Release, api: Api) -> None:
    workloads = _workloads_of_pods(api, release.namespace)
    per_workload: dict[str, list[str]] = {}
    for pod in api.pods(release.namespace):
        per_workload.setdefault(workloads[_name(pod)], []).append(pod["spec"]["nodeName"])
    for name in api.of_kind("apps/v1", "Deployment", release.namespace):
        nodes = per_workload[name]
        # maxSkew 1 over kubernetes.io/hostname, DoNotSchedule: no node has two more than
        # another, so with no more replicas than nodes each is on a node of its own.
        counts = [nodes.count(node.name) for node in NODES]
        assert max(counts) - min(counts) <= 1, (name, nodes)
        assert _replicas(release, name) <= len(NODES)
        assert len(set(nodes)) == len(nodes), (name, nodes)


def _edge_pods(api: Api, namespace: str) -> list[Object]:
    return api.pods(namespace, {"app.kubernetes.io/name": "edge"})


def _unschedulable(pod: Object) -> str | None:
    """The scheduler's reason for leaving `pod` Pending, if it did."""
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            message: str = condition["message"]
            return message
    return None


def test_the_spread_rule_leaves_a_replica_pending_rather_than_doubling_up_on_a_node(
    release: Release, api: Api
) -> None:
    """With the nodes that hold no edge cordoned, one more edge replica could only go beside
    another one: the hostname spread (DoNotSchedule; cordoned nodes still count as domains)
    keeps it Pending; uncordoned, it goes to one of them."""
    ns, replicas = release.namespace, _replicas(release, "edge")
    holding = {p["spec"]["nodeName"] for p in _edge_pods(api, ns)}
    free = [n.name for n in NODES if n.name not in holding]
    assert len(holding) == replicas and free
    for node in free:
        api.set_unschedulable(node, True)
    try:
        api.scale(ns, "edge", replicas + 1)
        extra = wait_for(
            lambda: next((p for p in _edge_pods(api, ns) if _unschedulable(p)), None),
            timeout=ROLLOUT_TIMEOUT_S, what="the extra edge replica left Pending", interval=0.5,
        )  # fmt: skip
        assert "didn't match pod topology spread constraints" in (_unschedulable(extra) or "")
        assert "nodeName" not in extra["spec"]
        api.set_unschedulable(free[0], False)

        def placed() -> str | None:
            pod = api.http.get(f"/api/v1/namespaces/{ns}/pods/{_name(extra)}").json()
            node: str | None = pod["spec"].get("nodeName")
            return node

        assert wait_for(placed, timeout=ROLLOUT_TIMEOUT_S, what="the extra edge replica bound",
                        interval=0.5) == free[0]  # fmt: skip
    finally:
        api.scale(ns, "edge", replicas)
        for node in free:
            api.set_unschedulable(node, False)
        wait_for(lambda: _rolled_out(api, release), timeout=ROLLOUT_TIMEOUT_S,
                 what="every Deployment back to its replicas", interval=0.5)  # fmt: skip


def _selected(api: Api, namespace: str, match_labels: dict[str, str]) -> set[str]:
    return {_name(p) for p in api.pods(namespace, match_labels)}


def test_network_policies_select_exactly_the_pods_the_intentions_name(
    release: Release, api: Api, topology: Topology
) -> None:
    ns = release.namespace
    workloads = _workloads_of_pods(api, ns)

    def pods_of(names: set[str]) -> set[str]:
        return {pod for pod, workload in workloads.items() if workload in names}

    def peers(policy: Object) -> set[str]:
        rule = policy["spec"]["ingress"][0]
        selected = [_selected(api, ns, p["podSelector"]["matchLabels"]) for p in rule["from"]]
        return set().union(*selected)

    policies = api.of_kind("networking.k8s.io/v1", "NetworkPolicy", ns)
    deny = policies.pop("default-deny")
    assert _selected(api, ns, deny["spec"]["podSelector"]["matchLabels"]) == set(workloads)
    assert "ingress" not in deny["spec"] and deny["spec"]["policyTypes"] == ["Ingress"]
    for destination, sources in native_intentions():
        allowed = {s["name"] for s in sources if s["action"] == "allow"}
        if destination == "*" or not allowed:
            continue
        policy = policies.pop(f"{destination}-from-mesh")
        target = _selected(api, ns, policy["spec"]["podSelector"]["matchLabels"])
        assert target == pods_of({destination}) != set(), destination
        assert peers(policy) == pods_of(allowed) != set(), destination
        assert policy["spec"]["ingress"][0]["ports"] == [
            {"port": CONNECT_INBOUND_PORT, "protocol": "TCP"}
        ]
    edge = policies.pop("edge-from-anywhere")
    assert _selected(api, ns, edge["spec"]["podSelector"]["matchLabels"]) == pods_of({"edge"})
    assert "from" not in edge["spec"]["ingress"][0]
    everyone = policies.pop("jaeger-from-chart")
    assert _selected(api, ns, everyone["spec"]["podSelector"]["matchLabels"]) == pods_of({"jaeger"})
    assert peers(everyone) == set(workloads)
    web = policies.pop("jaeger-from-web")
    assert peers(web) == pods_of({"web"}) != set()
    postgres = policies.pop("postgres-from-services")
    database_users = {s.name for s in topology.services if s.database}
    database_users |= {w.name for w in topology.workers}
    assert _selected(api, ns, postgres["spec"]["podSelector"]["matchLabels"]) == {"postgres-0"}
    assert peers(postgres) == pods_of(database_users) != set()
    assert policies == {}, f"policies no intention accounts for: {sorted(policies)}"


def _able_to_scale(hpa: Object) -> bool:
    conditions = hpa.get("status", {}).get("conditions", [])
    return any(c["type"] == "AbleToScale" and c["status"] == "True" for c in conditions)


def test_every_stateless_service_has_an_autoscaler_its_controller_reaches(
    release: Release, api: Api, topology: Topology
) -> None:
    ns = release.namespace

    def hpas() -> dict[str, Object]:
        return api.of_kind("autoscaling/v2", "HorizontalPodAutoscaler", ns)

    assert set(hpas()) == {s.name for s in topology.services} | {"edge"} | {
        w.name for w in topology.workers
    }

    def every_one_able() -> dict[str, Object] | None:
        found = hpas()
        return found if all(_able_to_scale(hpa) for hpa in found.values()) else None

    # AbleToScale: the controller-manager's HPA controller read the Deployment's scale.
    found = wait_for(every_one_able, timeout=ROLLOUT_TIMEOUT_S, what="every HPA AbleToScale",
                     interval=0.5)  # fmt: skip
    for name, hpa in found.items():
        assert hpa["status"]["currentReplicas"] == _replicas(release, name), name


def _budgets_current(api: Api, release: Release) -> dict[str, Object] | None:
    """The release's disruption budgets once the disruption controller has computed each for
    all of its workload's replicas."""
    budgets = api.of_kind("policy/v1", "PodDisruptionBudget", release.namespace)
    for name, budget in budgets.items():
        status = budget.get("status", {})
        if status.get("observedGeneration") != budget["metadata"]["generation"]:
            return None
        if status.get("currentHealthy") != _replicas(release, name):
            return None
    return budgets


@pytest.fixture
def cordoned(api: Api, release: Release) -> Iterator[None]:
    """Every node cordoned, as a drain does first: an evicted pod's replacement cannot be
    scheduled, so its budget stays spent. Uncordoned after, and the Deployments back."""
    for node in NODES:
        api.set_unschedulable(node.name, True)
    try:
        yield
    finally:
        for node in NODES:
            api.set_unschedulable(node.name, False)
        wait_for(lambda: _rolled_out(api, release), timeout=ROLLOUT_TIMEOUT_S,
                 what="every Deployment ready again after the drain", interval=0.5)  # fmt: skip


def test_a_disruption_budget_refuses_the_eviction_that_would_break_it(
    release: Release, api: Api, cordoned: None
) -> None:
    ns = release.namespace
    budgets = wait_for(lambda: _budgets_current(api, release), timeout=ROLLOUT_TIMEOUT_S,
                       what="every PodDisruptionBudget computed", interval=0.5)  # fmt: skip
    guarding = {
        name: b for name, b in budgets.items()
        if b["status"]["disruptionsAllowed"] < b["status"]["currentHealthy"]
    }  # fmt: skip
    assert "edge" in guarding
    for name, budget in guarding.items():
        allowed = budget["status"]["disruptionsAllowed"]
        # Running ones only: the Eviction API lets a Pending or terminating pod go without
        # asking the budget (one the previous test's scale-down removes may still be here).
        pods = sorted(
            _name(p)
            for p in api.pods(ns, budget["spec"]["selector"]["matchLabels"])
            if p["status"]["phase"] == "Running" and "deletionTimestamp" not in p["metadata"]
        )
        assert len(pods) == budget["status"]["currentHealthy"], (name, pods)
        for pod in pods[:allowed]:
            answer = api.evict(ns, pod)
            assert answer.status_code == 201, (name, pod, answer.text)
        kept = pods[allowed]
        refused = api.evict(ns, kept)
        assert refused.status_code == 429, (name, kept, refused.text)
        assert "disruption budget" in refused.json()["message"], refused.text
        still = api.http.get(f"/api/v1/namespaces/{ns}/pods/{kept}").raise_for_status().json()
        assert "deletionTimestamp" not in still["metadata"]
