"""consul-k8s's ServiceIntentions and ServiceDefaults kinds, registered so that the API server
stores the chart's CRs of them. Stand-ins, NOT consul-k8s's CRDs: no registry reachable from
here serves those (deploy/helm/SCHEMAS.md). Their schema is open (the whole spec is
x-kubernetes-preserve-unknown-fields): they validate nothing inside it; the unit tests compare
the CRs with the native runtime's intentions instead."""

from __future__ import annotations

from typing import Any

GROUP = "consul.hashicorp.com"
VERSION = "v1alpha1"
KINDS = {"ServiceIntentions": "serviceintentions", "ServiceDefaults": "servicedefaults"}


def standin_crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {"shopmesh/stand-in": "open schema; not consul-k8s's CRD"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower()},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }  # fmt: skip


def standin_crds() -> list[dict[str, Any]]:
    return [standin_crd(kind, plural) for kind, plural in KINDS.items()]
