"""Reaching a Kafka port is not enough (docs/security.md, "Kafka"): the mesh's real brokers refuse a
client that does not sign in, or signs in with a wrong password, and a signed-in service may do
only what mesh/kafka/topics.yaml grants it. The notifications principal stands in for a stolen
service credential: it reads events, so it must not be able to forge them nor to take another
service's consumer group. The attacks issue #15 names come with each principal's real
credentials: orders taking the payment workers' tasks, a payment worker forging a user event,
anyone but the payment workers writing their dead letters. Each attack must fail; the test
asserts Kafka's own refusal, and checks that nothing was written, read or committed."""

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
from mesh.components.kafka_acl import Operation, existing_bindings, load_clients
from mesh.components.kafka_auth import options_of
from mesh.runtime import kafka
from mesh.runtime.supervisor import Mesh
from tests.security.clients import kafka_client, kafka_connection

T = TypeVar("T")
ATTACKER = "notifications"
TOPIC_AUTHORIZATION_FAILED = 29
# orders' queue for the payment workers, who consume it in their group and dead-letter into its DLQ.
WORK_QUEUE = "payment-tasks"
WORKERS = "payments-worker"
WORKERS_GROUP = "payment-workers"


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def topic_partitions(mesh: Mesh, topic: str) -> list[TopicPartition]:
    numbers = {
        p.partition for p in kafka.partitions(mesh.topology, mesh.placement, mesh.state, [topic])
    }
    return [TopicPartition(topic, p) for p in sorted(numbers)]


def end_offsets(mesh: Mesh, topic: str) -> dict[TopicPartition, int]:
    """The topic's end offsets, as the project's tools see them."""
    partitions = topic_partitions(mesh, topic)

    async def ask() -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(**kafka_client(mesh))
        await consumer.start()
        try:
            return dict(await consumer.end_offsets(partitions))
        finally:
            await consumer.stop()

    return run(ask)


def committed_offsets(mesh: Mesh, group: str, topic: str) -> dict[TopicPartition, int]:
    """What `group` has committed on `topic`, as the project's tools see it."""

    async def ask() -> dict[TopicPartition, int]:
        admin = AIOKafkaAdminClient(**kafka_client(mesh))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    return run(ask)


def produce(mesh: Mesh, principal: str, topic: str) -> None:
    """One forged event on `topic`, sent as the services send theirs (acks=all, idempotent),
    signed in as `principal`."""
    forged = json.dumps({"id": str(uuid.uuid4()), "type": "forged"}).encode()

    async def send() -> None:
        producer = AIOKafkaProducer(
            **kafka_client(mesh, principal, acks="all", enable_idempotence=True)
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, forged, key=b"forged")
        finally:
            await producer.stop()

    run(send)


def test_a_client_that_does_not_sign_in_gets_no_metadata(mesh: Mesh) -> None:
    async def ask() -> Any:
        async with kafka_connection(mesh, principal=None) as conn:
            return await conn.send(MetadataRequest([], allow_auto_topic_creation=False))

    with pytest.raises(KafkaError):
        run(ask)


def test_a_producer_that_does_not_sign_in_cannot_even_bootstrap(mesh: Mesh) -> None:
    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=mesh.topology.kafka_bootstrap(), request_timeout_ms=5000
        )  # no sign-in at all
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaConnectionError):
        run(produce)


def test_a_wrong_password_is_refused(mesh: Mesh) -> None:
    right = options_of(mesh.state, ATTACKER)["sasl_plain_password"]

    async def sign_in() -> None:
        async with kafka_connection(mesh, ATTACKER, password="not-" + right):
            pass

    with pytest.raises(SaslAuthenticationFailed):
        run(sign_in)


def test_a_known_principal_with_the_brokers_name_and_no_password_is_refused(mesh: Mesh) -> None:
    async def sign_in() -> None:
        async with kafka_connection(mesh, kafka_auth.BROKER, password="broker"):
            pass

    with pytest.raises(SaslAuthenticationFailed):
        run(sign_in)


def test_notifications_cannot_forge_an_order_event_it_only_reads(mesh: Mesh) -> None:
    topic = "order-events"
    before = end_offsets(mesh, topic)

    with pytest.raises(TopicAuthorizationFailedError):
        produce(mesh, ATTACKER, topic)
    assert end_offsets(mesh, topic) == before


def fetch_error(mesh: Mesh, who: str, topic: str) -> int:
    """The error code of a Fetch of the topic's partition 0 from its start, signed in as `who`
    (any broker answers an unauthorized fetch with the refusal before it looks at leadership)."""

    async def fetch() -> int:
        async with kafka_connection(mesh, who) as conn:
            response = await conn.send(FetchRequest(0, 1, 1 << 20, 0, [(topic, [(0, 0, 1 << 20)])]))
        ((name, partitions),) = [(t[0], t[1]) for t in response.topics]
        assert name == topic
        ((_partition, error, *_),) = partitions
        return int(error)

    return run(fetch)


def test_notifications_cannot_read_a_topic_it_does_not_consume(mesh: Mesh) -> None:
    """payment-tasks is orders' queue for the payment workers; notifications may not even learn
    its partitions. (aiokafka's consumer retries a refused fetch quietly: the raw requests show
    the broker's answer.)"""

    async def metadata() -> int:
        async with kafka_connection(mesh, ATTACKER) as conn:
            response = await conn.send(
                MetadataRequest([WORK_QUEUE], allow_auto_topic_creation=False)
            )
        (found,) = response.to_object()["topics"]
        return int(found["error_code"])

    assert fetch_error(mesh, ATTACKER, WORK_QUEUE) == TOPIC_AUTHORIZATION_FAILED
    assert run(metadata) == TOPIC_AUTHORIZATION_FAILED
    # The control: the workers, who consume it, are let fetch.
    assert fetch_error(mesh, WORKERS, WORK_QUEUE) != TOPIC_AUTHORIZATION_FAILED


def test_notifications_cannot_join_or_read_the_payments_consumer_group(mesh: Mesh) -> None:
    """user-events is a topic notifications may read, in its own group only: in payments'
    group it would take payments' partitions (and commit its offsets)."""

    async def join() -> None:
        consumer = AIOKafkaConsumer(
            "user-events",
            **kafka_client(mesh, ATTACKER, group_id="payments", enable_auto_commit=False),
        )
        try:
            await consumer.start()  # refused while joining
            await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()

    async def offsets() -> Any:
        admin = AIOKafkaAdminClient(**kafka_client(mesh, ATTACKER))
        await admin.start()
        try:
            return await admin.list_consumer_group_offsets("payments")
        finally:
            await admin.close()

    with pytest.raises(GroupAuthorizationFailedError):
        run(join)
    with pytest.raises(GroupAuthorizationFailedError):
        run(offsets)


async def _as_queue_consumer(
    mesh: Mesh,
    group: str,
    partitions: list[TopicPartition],
    attempt: Callable[[AIOKafkaConsumer], Awaitable[object]],
) -> None:
    """`attempt` with orders' real credentials, in consumer group `group`, on the work queue's
    `partitions` from their start. Assigned, not subscribed: joining orders' own group would
    rebalance the orders instances that run in it."""
    consumer = AIOKafkaConsumer(
        **kafka_client(
            mesh, "orders", group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
        )
    )
    try:
        await consumer.start()
        consumer.assign(partitions)
        await attempt(consumer)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("group", "refusal"),
    [
        # The workers' group: no ACL lets orders in, so it is refused before any topic is asked.
        (WORKERS_GROUP, GroupAuthorizationFailedError),
        # Its own group, which it may use: the topic's Read is what it lacks.
        ("orders", TopicAuthorizationFailedError),
        # A new group of its choosing: no ACL names it.
        ("orders-payment-tasks", GroupAuthorizationFailedError),
    ],
)
def test_orders_cannot_consume_the_payment_tasks_it_produces(
    mesh: Mesh, group: str, refusal: type[KafkaError]
) -> None:
    """orders writes payment tasks (Write and Describe on the queue); with its real password it
    can neither take them from the workers' group nor read them in a group of its own, nor mark
    them done by committing the queue's end."""
    partitions = topic_partitions(mesh, WORK_QUEUE)
    ends = end_offsets(mesh, WORK_QUEUE)
    committed = committed_offsets(mesh, group, WORK_QUEUE)
    consumed: list[Any] = []

    async def read(consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=10000)
        consumed.extend(record for records in batches.values() for record in records)

    async def commit_the_end(consumer: AIOKafkaConsumer) -> None:
        await consumer.commit(ends)

    with pytest.raises(refusal):
        run(lambda: _as_queue_consumer(mesh, group, partitions, read))
    with pytest.raises(refusal):
        run(lambda: _as_queue_consumer(mesh, group, partitions, commit_the_end))
    assert consumed == []
    assert committed_offsets(mesh, group, WORK_QUEUE) == committed
    assert end_offsets(mesh, WORK_QUEUE) == ends


def test_a_payment_worker_cannot_publish_a_user_event(mesh: Mesh) -> None:
    """A compromised worker forging UserBlocked (or UserCreated) would lock users out or let
    someone in: only users writes user-events. The workers are not even told its partitions."""
    before = end_offsets(mesh, "user-events")

    with pytest.raises(TopicAuthorizationFailedError):
        produce(mesh, WORKERS, "user-events")
    assert end_offsets(mesh, "user-events") == before


def test_only_the_payment_workers_write_the_dead_letters_of_payment_tasks(mesh: Mesh) -> None:
    """A topic's DLQ holds what its consumers gave up on, for people to read and replay: a forged
    dead letter there is a forged task. payment-tasks' one consumer is the workers' group, so
    the workers alone (besides the super users) may write payment-tasks.dlq; every other
    principal, orders that writes the tasks themselves included, is refused."""
    dlq = f"{WORK_QUEUE}.dlq"
    principals = {client.principal for client in load_clients()}

    async def writers() -> set[str]:
        admin = AIOKafkaAdminClient(**kafka_client(mesh))
        await admin.start()
        try:
            bindings = await existing_bindings(admin)
        finally:
            await admin.close()
        return {b.principal for b in bindings if b.name == dlq and b.operation is Operation.WRITE}

    assert run(writers) == {WORKERS}
    before = end_offsets(mesh, dlq)
    refused = set()
    for principal in sorted(principals - {WORKERS}):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(mesh, principal, dlq)
        refused.add(principal)
    assert refused == {"users", "auth", "orders", "payments", "notifications"}
    assert end_offsets(mesh, dlq) == before


def test_a_service_cannot_create_topics(mesh: Mesh) -> None:
    name = f"attack.{uuid.uuid4().hex[:8]}"

    async def create() -> Any:
        admin = AIOKafkaAdminClient(**kafka_client(mesh, ATTACKER))
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
    admin = AIOKafkaAdminClient(**kafka_client(mesh))
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def test_the_attacker_is_refused_by_acls_not_by_a_broken_sign_in(mesh: Mesh) -> None:
    """The control: the same principal reads what it is granted, so each refusal above is the
    authorizer's."""

    async def read() -> int:
        consumer = AIOKafkaConsumer(**kafka_client(mesh, ATTACKER, enable_auto_commit=False))
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
