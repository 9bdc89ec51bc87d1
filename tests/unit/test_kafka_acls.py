"""Kafka's principals and ACLs, derived from mesh/kafka/topics.yaml (no broker is started)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from mesh.components import kafka, kafka_auth
from mesh.components.kafka_acl import (
    CLUSTER,
    AclBinding,
    KafkaClient,
    Operation,
    Pattern,
    Resource,
    acl_bindings,
    bindings_from_describe,
    client_bindings,
    load_clients,
    parse_clients,
)
from mesh.runtime.paths import StateDir
from mesh.topology import load

TOPICS = kafka.parse_topics({"topics": {"a": {"partitions": 1}, "b": {"partitions": 1}}})


def topic(name: str, who: str, op: Operation) -> AclBinding:
    return AclBinding(Resource.TOPIC, name, Pattern.LITERAL, who, op)


def test_every_program_that_uses_kafka_is_a_principal_of_its_own() -> None:
    topology = load()
    # A service without a database uses no Kafka: outboxes and processed events need one.
    programs = {s.name for s in topology.services if s.database}
    programs |= {w.name for w in topology.workers}
    assert {c.principal for c in load_clients()} == programs


def test_a_producer_writes_its_topics_and_nothing_else() -> None:
    (users,) = parse_clients({"clients": {"users": {"produces": ["a"]}}}, TOPICS)
    assert client_bindings(users) == {
        topic("a", "users", Operation.WRITE),
        topic("a", "users", Operation.DESCRIBE),
        AclBinding(Resource.CLUSTER, CLUSTER, Pattern.LITERAL, "users", Operation.IDEMPOTENT_WRITE),
    }


def test_a_consumer_reads_its_topics_and_groups_and_writes_only_their_dlqs() -> None:
    spec = {"clients": {"notifications": {"consumes": ["a"], "groups": ["notifications"]}}}
    (notifications,) = parse_clients(spec, TOPICS)
    who = "notifications"
    assert client_bindings(notifications) == {
        topic("a", who, Operation.READ),
        topic("a", who, Operation.DESCRIBE),
        topic("a.dlq", who, Operation.WRITE),
        topic("a.dlq", who, Operation.DESCRIBE),
        AclBinding(Resource.GROUP, "notifications", Pattern.LITERAL, who, Operation.READ),
        AclBinding(Resource.CLUSTER, CLUSTER, Pattern.LITERAL, who, Operation.IDEMPOTENT_WRITE),
    }


def test_a_group_ending_in_a_star_is_a_prefix() -> None:
    spec = {"clients": {"auth": {"consumes": ["a"], "groups": ["auth-cache-*"]}}}
    (auth,) = parse_clients(spec, TOPICS)
    groups = {b for b in client_bindings(auth) if b.resource is Resource.GROUP}
    assert groups == {
        AclBinding(Resource.GROUP, "auth-cache-", Pattern.PREFIXED, "auth", Operation.READ)
    }


def test_the_mesh_grants_notifications_no_write_on_what_it_reads_nor_other_groups() -> None:
    bindings = acl_bindings(load_clients())
    mine = {b for b in bindings if b.principal == "notifications"}
    written = {b.name for b in mine if b.operation is Operation.WRITE}
    assert written == {"user-events.dlq", "order-events.dlq", "payment-events.dlq"}
    assert {b.name for b in mine if b.resource is Resource.GROUP} == {"notifications"}
    # Only orders writes payment tasks; only the workers read them, in their own group.
    assert {b.principal for b in bindings if b.name == "payment-tasks" and
            b.operation is Operation.WRITE} == {"orders"}  # fmt: skip
    assert {b.principal for b in bindings if b.name == "payment-tasks" and
            b.operation is Operation.READ} == {"payments-worker"}  # fmt: skip
    assert not any(b.name == "*" or b.pattern is Pattern.ANY for b in bindings)


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ({"x": {"produces": ["nope"]}}, r"no such topics \['nope'\]"),
        ({"x": {"produces": ["a.dlq"]}}, "no such topics"),
        ({"x": {"consumes": ["a"]}}, "names no groups"),
        ({"x": {"consumes": ["a"], "groups": ["*"]}}, "must not be empty"),
        ({"x": {"produce": ["a"]}}, "unknown keys"),
        ({"x": {"produces": "a"}}, "must be a list"),
    ],
)
def test_a_client_spec_that_grants_something_unmeant_is_refused(
    clients: dict[str, Any], message: str
) -> None:
    with pytest.raises(kafka.TopicsError, match=message):
        parse_clients({"clients": clients}, TOPICS)


def test_a_describe_response_reads_back_as_the_bindings_it_lists() -> None:
    response = {
        "error_code": 0,
        "error_message": None,
        "resources": [
            {
                "resource_type": 3,
                "resource_name": "auth-cache-",
                "resource_pattern_type": 4,
                "acls": [
                    {"principal": "User:auth", "host": "*", "operation": 3, "permission_type": 3},
                    {"principal": "User:x", "host": "*", "operation": 3, "permission_type": 2},
                    {
                        "principal": "User:y",
                        "host": "10.0.0.1",
                        "operation": 3,
                        "permission_type": 3,
                    },
                ],
            }
        ],
    }
    assert bindings_from_describe(response) == {
        AclBinding(Resource.GROUP, "auth-cache-", Pattern.PREFIXED, "auth", Operation.READ)
    }
    with pytest.raises(RuntimeError, match="denied"):
        bindings_from_describe({"error_code": 31, "error_message": "denied", "resources": []})


def test_a_binding_goes_on_the_wire_as_an_allow_from_any_host() -> None:
    binding = AclBinding(Resource.GROUP, "orders", Pattern.LITERAL, "orders", Operation.READ)
    assert binding.as_tuple() == (3, "orders", 3, "User:orders", "*", 3, 3)


def test_the_brokers_authenticate_everyone_and_deny_what_no_acl_allows() -> None:
    settings = kafka.CLUSTER_SETTINGS
    assert (
        settings["listener.security.protocol.map"]
        == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert settings["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert settings["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert settings["authorizer.class.name"].endswith("StandardAuthorizer")
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["super.users"] == "User:broker;User:admin"


def test_the_brokers_secret_settings_sign_them_in_on_both_listeners() -> None:
    jaas = kafka_auth.jaas_settings("s3cret")
    assert jaas["listener.name.client.scram-sha-512.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="broker" password="s3cret";'
    )
    assert jaas["listener.name.controller.plain.sasl.jaas.config"].endswith(
        'username="broker" password="s3cret" user_broker="s3cret";'
    )
    assert not set(jaas) & set(kafka.CLUSTER_SETTINGS)


def test_passwords_are_generated_once_into_owner_only_files(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    names = kafka_auth.principals(("orders",))
    assert names == ("broker", "admin", "orders")
    first = kafka_auth.passwords(state, names)
    assert kafka_auth.passwords(state, names) == first
    assert len(set(first.values())) == 3
    for name in names:
        mode = stat.S_IMODE(kafka_auth.password_file(state, name).stat().st_mode)
        assert mode == 0o600, name
    assert kafka_auth.options_of(state, "orders") == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "orders",
        "sasl_plain_password": first["orders"],
    }


def test_a_principal_named_like_the_brokers_or_the_tools_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        kafka_auth.principals(("admin",))


def test_the_format_arguments_carry_every_principals_scram_credentials() -> None:
    args = kafka_auth.scram_arguments({"broker": "b", "orders": "o"})
    assert args == [
        "--add-scram", "SCRAM-SHA-512=[name=broker,password=b]",
        "--add-scram", "SCRAM-SHA-512=[name=orders,password=o]",
    ]  # fmt: skip


def test_the_tools_client_properties_sign_in_with_scram() -> None:
    text = kafka_auth.client_properties("admin", "pw")
    assert text.splitlines() == [
        "security.protocol=SASL_PLAINTEXT",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="pw";',
    ]


def test_a_principal_that_uses_nothing_is_granted_nothing() -> None:
    assert client_bindings(KafkaClient("x")) == frozenset()


def test_the_format_argument_file_is_one_argument_a_line_and_refuses_spaces() -> None:
    assert kafka_auth.argument_file(["format", "-c", "/s/k.properties"]) == (
        "format\n-c\n/s/k.properties\n"
    )
    with pytest.raises(ValueError, match="whitespace"):
        kafka_auth.argument_file(["-c", "/my state/k.properties"])
