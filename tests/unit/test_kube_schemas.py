"""mesh/runtime/kube_schemas.py on small hand-made definitions: where each schema goes, refs
inlined, objects closed, Kubernetes' loose scalar types kept loose."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from mesh.runtime.kube_schemas import from_crds, from_openapi_v2, schema_path

SWAGGER: dict[str, Any] = {
    "definitions": {
        "io.k8s.api.core.v1.Service": {
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Service"}],
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "spec": {"$ref": "#/definitions/io.k8s.api.core.v1.ServiceSpec"},
            },
        },
        "io.k8s.api.core.v1.ServiceSpec": {
            "type": "object",
            "properties": {
                "targetPort": {
                    "$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
                },
                "memory": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "nested": {"$ref": "#/definitions/io.k8s.api.core.v1.ServiceSpec"},
            },
        },
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
            "type": "string",
            "format": "int-or-string",
        },
        "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
    }
}

CRD: dict[str, Any] = {
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "kafka.strimzi.io",
        "names": {"kind": "KafkaTopic"},
        "versions": [
            {"name": "v1alpha1", "served": False, "schema": {"openAPIV3Schema": {}}},
            {
                "name": "v1beta2",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "partitions": {"type": "integer"},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "config": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                        "properties": {"known": {"type": "string"}},
                                    },
                                },
                            }
                        },
                    }
                },
            },
        ],
    },
}


def test_the_core_group_is_named_by_its_version_as_kubeconform_does() -> None:
    assert schema_path("", "v1", "Service") == "v1/v1/service.json"
    assert schema_path("apps", "v1", "Deployment") == "apps/v1/deployment.json"


def test_kubernetes_kinds_are_inlined_closed_and_loose_where_kubernetes_is() -> None:
    schemas = from_openapi_v2(SWAGGER)
    assert list(schemas) == ["v1/v1/service.json"]
    schema = schemas["v1/v1/service.json"]
    good = {"kind": "Service", "spec": {"targetPort": "http", "memory": 1, "labels": {"a": "b"}}}
    jsonschema.validate(good, schema)
    jsonschema.validate({"spec": {"targetPort": 8080, "memory": "64Mi"}}, schema)
    for bad in ({"spec": {"targetPortt": 1}}, {"extra": 1}, {"spec": {"targetPort": [1]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_recursive_definition_stops_at_its_first_repetition() -> None:
    schema = from_openapi_v2(SWAGGER)["v1/v1/service.json"]
    assert schema["properties"]["spec"]["properties"]["nested"] == {}


def test_crds_give_a_closed_schema_per_served_version() -> None:
    schemas = from_crds([CRD, {"kind": "Other"}])
    assert list(schemas) == ["kafka.strimzi.io/v1beta2/kafkatopic.json"]
    schema = schemas["kafka.strimzi.io/v1beta2/kafkatopic.json"]
    jsonschema.validate({"spec": {"partitions": 3, "port": "a", "config": {"x": 1}}}, schema)
    jsonschema.validate({"spec": {"port": 9092}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": {"partition": 3}}, schema)
