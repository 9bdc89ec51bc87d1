"""What the chart's pods refer to (tests/unit/test_helm_chart.py on the rendered chart,
tests/kube on the installed one): each Secret and ConfigMap a pod template names, with the keys
it takes from it, and whose each one is: the chart's own, or the operators' and the installer's
as mesh/helm/wiring.py documents them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Object = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet")


@dataclass(frozen=True)
class Reference:
    workload: str
    kind: str  # Secret or ConfigMap
    name: str
    key: str | None  # None: the whole object (a volume without items)


def pod_specs(objects: list[Object]) -> Iterator[tuple[str, Object]]:
    for o in objects:
        if o["kind"] in WORKLOADS:
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def references(objects: list[Object]) -> list[Reference]:
    found = []
    for workload, pod in pod_specs(objects):
        for volume in pod.get("volumes", []):
            for kind, field, name_field in (("Secret", "secret", "secretName"),
                                            ("ConfigMap", "configMap", "name")):  # fmt: skip
                if field in volume:
                    source = volume[field]
                    keys = [item["key"] for item in source.get("items", [])] or [None]
                    found += [Reference(workload, kind, source[name_field], k) for k in keys]
        for container in pod["containers"]:
            for env in container.get("env", []):
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = env.get("valueFrom", {}).get(field)
                    if ref:
                        found.append(Reference(workload, kind, ref["name"], ref["key"]))
            assert "envFrom" not in container, workload
    return found


def operators_secrets(objects: list[Object]) -> set[str]:
    """The Secrets the operators make, as they name them, and the installer's: Strimzi's of
    each KafkaUser (named as the user) and its cluster CA's certificate; consul-k8s's CA
    certificate (its release `consul`); each Connect service's Consul ACL token, which the
    installer makes (docs/kubernetes.md)."""
    strimzi = {o["metadata"]["name"] for o in objects if o["kind"] == "KafkaUser"}
    strimzi |= {f"{o['metadata']['name']}-cluster-ca-cert" for o in objects if o["kind"] == "Kafka"}
    tokens = {
        f"{o['metadata']['name']}-consul-token"
        for o in objects
        if o["kind"] == "ServiceDefaults" and o["metadata"]["name"] != "edge"
    }
    return strimzi | {"consul-ca-cert"} | tokens


def owned(objects: list[Object]) -> dict[tuple[str, str], Object]:
    """The chart's own Secrets and ConfigMaps, by (kind, name)."""
    return {
        (o["kind"], o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("Secret", "ConfigMap")
    }


def keys_of(o: Object) -> set[str]:
    return {*o.get("data", {}), *o.get("binaryData", {})}
