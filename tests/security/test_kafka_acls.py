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
from aiokafka.protocol.metadata import MetadataRequest

from mesh.components.kafka_auth import admin_options, client_options, options_of
from mesh.runtime.supervisor import Mesh

T = TypeVar("T")
ATTACKER = "notifications"
TOPIC_AUTHORIZATION_FAILED = 29


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def first_node(mesh: Mesh) -> tuple[str, int]:
    node = mesh.topology.kafka.nodes[0]
    return mesh.placement.host(node.name), node.port


async def end_offsets(mesh: Mesh, topic: str) -> dict[TopicPartition, int]:
    """The topic's end offsets, as the project's tools see them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=mesh.topology.kafka_bootstrap(), **admin_options(mesh.state)
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"no partitions for {topic}"
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


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
    before = run(lambda: end_offsets(mesh, topic))
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
    assert run(lambda: end_offsets(mesh, topic)) == before


def test_notifications_cannot_read_a_topic_it_does_not_consume(mesh: Mesh) -> None:
    async def read() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **options_of(mesh.state, ATTACKER),
        )
        await consumer.start()
        try:
            partition = TopicPartition("payment-tasks", 0)
            consumer.assign([partition])
            await consumer.getmany(partition, timeout_ms=5000)
        finally:
            await consumer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        run(read)


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
        await consumer.start()
        try:
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
