"""JSON schemas for kubeconform, made from the definitions Kubernetes and the operators publish
(deploy/helm/SCHEMAS.md says where each comes from): one standalone schema per kind and
version, at `<group>/<version>/<kind>.json` (kubeconform's template
`{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json`, whose Group is the version
itself for the core group). Strict: an object with listed properties allows no others, so a
misspelt field fails validation instead of being dropped by the API server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_LOCATION = "{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json"
_INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
# resource.Quantity is a string in the OpenAPI; manifests also write plain numbers (cpu: 1).
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_NUMBER_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def schema_path(group: str, version: str, kind: str) -> str:
    api_group = group if group else version
    return f"{api_group}/{version}/{kind.lower()}.json"


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("format") == "int-or-string" or out.pop("x-kubernetes-int-or-string", False):
        return {k: v for k, v in out.items() if k not in ("type", "format")} | _INT_OR_STRING
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _inline(node: Any, definitions: dict[str, Any], stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(n, definitions, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name == _QUANTITY:
            return dict(_NUMBER_OR_STRING)
        if name in stack:
            # A recursive type (JSONSchemaProps): accepted as any object below this depth.
            return {}
        return _inline(definitions[name], definitions, (*stack, name))
    return {k: _inline(v, definitions, stack) for k, v in node.items()}


def from_openapi_v2(spec: dict[str, Any]) -> dict[str, Schema]:
    """Every kind of Kubernetes' swagger.json (api/openapi-spec), by schema path."""
    definitions = spec["definitions"]
    schemas: dict[str, Schema] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            path = schema_path(gvk["group"], gvk["version"], gvk["kind"])
            inlined = _inline(definition, definitions, (name,))
            schemas[path] = _strict(inlined) | {"$schema": DRAFT}
    return schemas


def from_crds(crds: Iterable[dict[str, Any]]) -> dict[str, Schema]:
    """Every served version of each CustomResourceDefinition, by schema path."""
    schemas: dict[str, Schema] = {}
    for crd in crds:
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            openapi = (version.get("schema") or {}).get("openAPIV3Schema")
            if not version.get("served") or openapi is None:
                continue
            path = schema_path(spec["group"], version["name"], spec["names"]["kind"])
            schemas[path] = _strict(openapi) | {"$schema": DRAFT}
    return schemas


def write(schemas: dict[str, Schema], root: Path) -> None:
    for path, schema in schemas.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema, separators=(",", ":")))
