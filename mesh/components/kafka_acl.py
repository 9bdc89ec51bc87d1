"""Kafka's ACLs, derived from mesh/kafka/topics.yaml's `clients` (docs/security.md, "Kafka"): what
each service's principal may do, and nothing else (the brokers run StandardAuthorizer with
allow.everyone.if.no.acl.found=false). Applied on every start, through the admin principal:
missing bindings are created, bindings no client asks for are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest

from mesh.components.kafka import DLQ_SUFFIX, TOPICS_FILE, TopicsError, TopicSpec, parse_topics

# Kafka's resource name for the cluster (the target of IdempotentWrite).
CLUSTER = "kafka-cluster"
ANY_HOST = "*"
PREFIX_MARK = "*"


class Resource(IntEnum):
    """org.apache.kafka.common.resource.ResourceType codes."""

    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Pattern(IntEnum):
    """org.apache.kafka.common.resource.PatternType codes."""

    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """org.apache.kafka.common.acl.AclOperation codes."""

    ANY = 1
    READ = 3
    WRITE = 4
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    ANY = 1
    ALLOW = 3


@dataclass(frozen=True)
class KafkaClient:
    """One principal's use of Kafka: topics written, topics read, consumer groups (a name
    ending in `*` is a prefix)."""

    principal: str
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class AclBinding:
    """An ALLOW for `principal` from any host (the only kind the mesh creates)."""

    resource: Resource
    name: str
    pattern: Pattern
    principal: str
    operation: Operation

    def as_tuple(self) -> tuple[int, str, int, str, str, int, int]:
        """The fields of CreateAcls/DeleteAcls v1, in their order."""
        return (
            self.resource,
            self.name,
            self.pattern,
            f"User:{self.principal}",
            ANY_HOST,
            self.operation,
            Permission.ALLOW,
        )


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TopicsError(f"{where} must be a list of names")
    return tuple(value)


def parse_clients(raw: dict[str, Any], topics: tuple[TopicSpec, ...]) -> tuple[KafkaClient, ...]:
    """topics.yaml's `clients`; TopicsError for a topic it does not list (or a DLQ: those
    follow from `consumes`), a consumer without groups, a group prefix `*` alone."""
    known = {t.name for t in topics if not t.name.endswith(DLQ_SUFFIX)}
    clients = []
    for principal, spec in (raw.get("clients") or {}).items():
        spec = spec or {}
        unknown_keys = set(spec) - {"produces", "consumes", "groups"}
        if unknown_keys:
            raise TopicsError(f"clients.{principal}: unknown keys {sorted(unknown_keys)}")
        client = KafkaClient(
            principal=principal,
            produces=_names(spec.get("produces"), f"clients.{principal}.produces"),
            consumes=_names(spec.get("consumes"), f"clients.{principal}.consumes"),
            groups=_names(spec.get("groups"), f"clients.{principal}.groups"),
        )
        unknown = sorted(set(client.produces + client.consumes) - known)
        if unknown:
            raise TopicsError(f"clients.{principal}: no such topics {unknown}")
        if client.consumes and not client.groups:
            raise TopicsError(f"clients.{principal}: consumes topics but names no groups")
        if PREFIX_MARK in client.groups:
            raise TopicsError(f"clients.{principal}: a group prefix must not be empty")
        clients.append(client)
    return tuple(clients)


def load_clients(path: Path = TOPICS_FILE) -> tuple[KafkaClient, ...]:
    raw = yaml.safe_load(path.read_text())
    return parse_clients(raw, parse_topics(raw))


def _topic(name: str, principal: str, *operations: Operation) -> list[AclBinding]:
    return [AclBinding(Resource.TOPIC, name, Pattern.LITERAL, principal, op) for op in operations]


def _group(name: str, principal: str) -> AclBinding:
    if name.endswith(PREFIX_MARK):
        return AclBinding(
            Resource.GROUP, name[: -len(PREFIX_MARK)], Pattern.PREFIXED, principal, Operation.READ
        )
    return AclBinding(Resource.GROUP, name, Pattern.LITERAL, principal, Operation.READ)


def client_bindings(client: KafkaClient) -> frozenset[AclBinding]:
    """Write (and Describe) on what it produces and on the DLQs of what it consumes; Read (and
    Describe) on what it consumes; Read on its groups; IdempotentWrite on the cluster once it
    writes anything, since every producer of the mesh is idempotent."""
    who = client.principal
    bindings: list[AclBinding] = []
    written = [*client.produces, *(topic + DLQ_SUFFIX for topic in client.consumes)]
    for topic in written:
        bindings += _topic(topic, who, Operation.WRITE, Operation.DESCRIBE)
    for topic in client.consumes:
        bindings += _topic(topic, who, Operation.READ, Operation.DESCRIBE)
    bindings += [_group(group, who) for group in client.groups]
    if written:
        bindings.append(
            AclBinding(Resource.CLUSTER, CLUSTER, Pattern.LITERAL, who, Operation.IDEMPOTENT_WRITE)
        )
    return frozenset(bindings)


def acl_bindings(clients: tuple[KafkaClient, ...]) -> frozenset[AclBinding]:
    return frozenset(b for client in clients for b in client_bindings(client))


def bindings_from_describe(response: dict[str, Any]) -> frozenset[AclBinding]:
    """The ALLOW-from-any-host bindings (the only kind the mesh makes, and so the only kind it
    deletes) in a DescribeAcls v1 response, as `to_object()` gives it."""
    if response["error_code"]:
        raise RuntimeError(f"describing Kafka ACLs failed: {response['error_message']}")
    found = []
    for resource in response["resources"]:
        for acl in resource["acls"]:
            if acl["permission_type"] != Permission.ALLOW or acl["host"] != ANY_HOST:
                continue
            principal = acl["principal"].removeprefix("User:")
            found.append(
                AclBinding(
                    Resource(resource["resource_type"]),
                    resource["resource_name"],
                    Pattern(resource["resource_pattern_type"]),
                    principal,
                    Operation(acl["operation"]),
                )
            )
    return frozenset(found)


async def existing_bindings(admin: AIOKafkaAdminClient) -> frozenset[AclBinding]:
    # Null name, principal and host match any (aiokafka types them as str only).
    request = DescribeAclsRequest(
        Resource.ANY,
        None,  # type: ignore[arg-type]
        Pattern.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Operation.ANY,
        Permission.ANY,
    )
    response = await admin._send_request(request)
    return bindings_from_describe(response.to_object())


def _check(response: Any, key: str, what: str) -> None:
    errors = [r for r in response.to_object()[key] if r["error_code"]]
    if errors:
        raise RuntimeError(f"{what} failed: {errors[0]['error_message']}")


async def apply_bindings(
    admin: AIOKafkaAdminClient, wanted: frozenset[AclBinding]
) -> tuple[list[AclBinding], list[AclBinding]]:
    """Make the cluster's ACLs exactly `wanted`; returns (created, deleted). The broker that
    answers the describe may not have applied the controller's latest ACLs yet: at worst a
    binding is created again, which Kafka takes as a no-op."""
    existing = await existing_bindings(admin)
    created = sorted(wanted - existing)
    deleted = sorted(existing - wanted)
    for binding in created:
        response = await admin._send_request(CreateAclsRequest(*binding.as_tuple()))
        _check(response, "creation_responses", f"creating Kafka ACL {binding}")
    for binding in deleted:
        response = await admin._send_request(DeleteAclsRequest(*binding.as_tuple()))
        _check(response, "filter_responses", f"deleting Kafka ACL {binding}")
    return created, deleted
