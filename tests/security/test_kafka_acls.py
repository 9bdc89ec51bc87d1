"""Reaching a Kafka port is not enough (docs/security.md, "Kafka"): the mesh's real brokers refuse a
client that does not sign in, or signs in with a wrong password, and a signed-in service may do
only what mesh/kafka/topics.yaml grants it. The notifications principal stands in for a stolen
service credential: it reads events, so it must not be able to forge them nor to take another
service's consumer group. Each attack must fail; the test asserts the refusal, and checks that
nothing was written."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest

from mesh.components import kafka_auth
from mesh.components.kafka_acl import load_clients
from mesh.components.kafka_auth import admin_options, client_options, options_of
from mesh.runtime import kafka
from mesh.runtime.supervisor import Mesh

T = TypeVar("T")
ATTACKER = "notifications"
TOPIC_AUTHORIZATION_FAILED = 29


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def first_node(mesh: Mesh) -> tuple[str, int]:
    node = mesh.topology.kafka.nodes[0]
    return mesh.placement.host(node.name), node.port


def end_offsets(mesh: Mesh, topic: str) -> dict[TopicPartition, int]:
    """The topic's end offsets, as the project's tools see them."""
    numbers = {p.partition for p in kafka.partitions(mesh.topology, mesh.state, [topic])}
    partitions = [TopicPartition(topic, p) for p in sorted(numbers)]

    async def ask() -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(), **admin_options(mesh.state)
        )
        await consumer.start()
        try:
            return dict(await consumer.end_offsets(partitions))
        finally:
            await consumer.stop()

    return run(ask)


def test_a_client_that_does_not_sign_in_gets_no_metadata(mesh: Mesh) -> None:
    host, port = first_node(mesh)

    async def ask() -> Any:
        conn = await create_conn(host, port, request_timeout_ms=5000)
        try:
            return await conn.send(MetadataRequest([], allow_auto_topic_creation=False))
        finally:
            conn.close()

    with pytest.raises(KafkaError):
        run(ask)


def test_a_producer_that_does_not_sign_in_cannot_even_bootstrap(mesh: Mesh) -> None:
    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(), request_timeout_ms=5000
        )
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaConnectionError):
        run(produce)


def test_a_wrong_password_is_refused(mesh: Mesh) -> None:
    host, port = first_node(mesh)
    right = options_of(mesh.state, ATTACKER)["sasl_plain_password"]
    wrong = client_options(ATTACKER, "not-" + right)

    async def sign_in() -> None:
        conn = await create_conn(host, port, request_timeout_ms=5000, **wrong)
        conn.close()

    with pytest.raises(SaslAuthenticationFailed):
        run(sign_in)


def test_a_known_principal_with_the_brokers_name_and_no_password_is_refused(mesh: Mesh) -> None:
    host, port = first_node(mesh)
    guess = client_options("broker", "broker")

    async def sign_in() -> None:
        conn = await create_conn(host, port, request_timeout_ms=5000, **guess)
        conn.close()

    with pytest.raises(SaslAuthenticationFailed):
        run(sign_in)


def test_notifications_cannot_forge_an_order_event_it_only_reads(mesh: Mesh) -> None:
    topic = "order-events"
    before = end_offsets(mesh, topic)
    forged = json.dumps({"id": str(uuid.uuid4()), "type": "forged"}).encode()

    async def forge() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(),
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=10000,
            **options_of(mesh.state, ATTACKER),
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, forged, key=b"order/forged")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        run(forge)
    assert end_offsets(mesh, topic) == before


def fetch_error(mesh: Mesh, who: str, topic: str) -> int:
    """The error code of a Fetch of the topic's partition 0 from its start, signed in as `who`
    (any broker answers an unauthorized fetch with the refusal before it looks at leadership)."""
    host, port = first_node(mesh)

    async def fetch() -> int:
        conn = await create_conn(host, port, request_timeout_ms=5000, **options_of(mesh.state, who))
        try:
            response = await conn.send(FetchRequest(0, 1, 1 << 20, 0, [(topic, [(0, 0, 1 << 20)])]))
        finally:
            conn.close()
        ((name, partitions),) = [(t[0], t[1]) for t in response.topics]
        assert name == topic
        ((_partition, error, *_),) = partitions
        return int(error)

    return run(fetch)


def test_notifications_cannot_read_a_topic_it_does_not_consume(mesh: Mesh) -> None:
    """payment-tasks is orders' queue for the payment workers; notifications may not even learn
    its partitions. (aiokafka's consumer retries a refused fetch quietly: the raw requests show
    the broker's answer.)"""
    host, port = first_node(mesh)

    async def metadata() -> int:
        conn = await create_conn(
            host, port, request_timeout_ms=5000, **options_of(mesh.state, ATTACKER)
        )
        try:
            response = await conn.send(
                MetadataRequest(["payment-tasks"], allow_auto_topic_creation=False)
            )
        finally:
            conn.close()
        (found,) = response.to_object()["topics"]
        return int(found["error_code"])

    assert fetch_error(mesh, ATTACKER, "payment-tasks") == TOPIC_AUTHORIZATION_FAILED
    assert run(metadata) == TOPIC_AUTHORIZATION_FAILED
    # The control: the workers, who consume it, are let fetch.
    assert fetch_error(mesh, "payments-worker", "payment-tasks") != TOPIC_AUTHORIZATION_FAILED


def test_notifications_cannot_join_or_read_the_payments_consumer_group(mesh: Mesh) -> None:
    """user-events is a topic notifications may read, in its own group only: in payments'
    group it would take payments' partitions (and commit its offsets)."""

    async def join() -> None:
        consumer = AIOKafkaConsumer(
            "user-events",
            bootstrap_servers=mesh.topology.kafka_bootstrap(),
            group_id="payments",
            enable_auto_commit=False,
            **options_of(mesh.state, ATTACKER),
        )
        try:
            await consumer.start()  # refused while joining
            await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()

    async def offsets() -> Any:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=mesh.topology.kafka_bootstrap(), **options_of(mesh.state, ATTACKER)
        )
        await admin.start()
        try:
            return await admin.list_consumer_group_offsets("payments")
        finally:
            await admin.close()

    with pytest.raises(GroupAuthorizationFailedError):
        run(join)
    with pytest.raises(GroupAuthorizationFailedError):
        run(offsets)


def test_a_service_cannot_create_topics(mesh: Mesh) -> None:
    name = f"attack.{uuid.uuid4().hex[:8]}"

    async def create() -> Any:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=mesh.topology.kafka_bootstrap(), **options_of(mesh.state, ATTACKER)
        )
        await admin.start()
        try:
            return await admin.create_topics([NewTopic(name, 1, 3)])
        finally:
            await admin.close()

    response = run(create)
    assert [error for _name, error, *_ in response.topic_errors] == [TOPIC_AUTHORIZATION_FAILED]
    admin_view = run(lambda: _topics(mesh))
    assert name not in admin_view


async def _topics(mesh: Mesh) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=mesh.topology.kafka_bootstrap(), **admin_options(mesh.state)
    )
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def test_the_attacker_is_refused_by_acls_not_by_a_broken_sign_in(mesh: Mesh) -> None:
    """The control: the same principal reads what it is granted, so each refusal above is the
    authorizer's."""

    async def read() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(),
            enable_auto_commit=False,
            **options_of(mesh.state, ATTACKER),
        )
        await consumer.start()
        try:
            partition = TopicPartition("order-events", 0)
            consumer.assign([partition])
            return (await consumer.end_offsets([partition]))[partition]
        finally:
            await consumer.stop()

    assert run(read) >= 0


def test_no_log_environment_or_command_line_holds_a_kafka_password(mesh: Mesh) -> None:
    names = kafka_auth.principals(tuple(c.principal for c in load_clients()))
    passwords = kafka_auth.passwords(mesh.state, names).values()
    logged = [
        path.name
        for path in mesh.state.logs.iterdir()
        if any(p in path.read_text(errors="replace") for p in passwords)
    ]
    assert logged == []
    exposed = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        seen = " ".join(proc.info["cmdline"] or []) + repr(proc.info["environ"] or {})
        if any(p in seen for p in passwords):
            exposed.append(proc.info["pid"])
    assert exposed == []
