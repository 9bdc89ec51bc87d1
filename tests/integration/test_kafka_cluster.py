"""The three-node KRaft cluster: topics as configured, acks=all round trips, and a broker SIGKILLed
under a steady stream of writes losing and duplicating nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from mesh.components import kafka
from mesh.components.kafka_auth import admin_options
from mesh.placement import NativePlacement, Placement
from mesh.runtime.kafka import brokers_seen_by, cluster_health, ensure_topics, partitions
from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology
from tests.support import wait_for

KILLED = "kafka-2"
STREAM = 2000  # keyed messages sent while a broker is killed


async def _topic_configs(
    bootstrap: str, sign_in: dict[str, Any], names: list[str]
) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **sign_in)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _msg, _type, name, entries, *_ in response.resources:
            assert error_code == 0, (name, error_code)
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


def test_three_brokers_and_every_configured_topic(topology: Topology, mesh: Mesh) -> None:
    wanted_ids = {node.id for node in topology.kafka.nodes}
    for node in topology.kafka.nodes:
        seen = brokers_seen_by(NativePlacement.of(topology), mesh.state, node)
        assert seen == wanted_ids, node.name

    topics = kafka.load_topics()
    assert {t.name for t in topics} >= {
        f"{name}{suffix}"
        for name in ("user-events", "order-events", "payment-events", "payment-tasks")
        for suffix in ("", ".dlq")
    }
    states = partitions(topology, mesh.placement, mesh.state, [t.name for t in topics])
    names = [t.name for t in topics]
    sign_in = admin_options(mesh.state)
    configs = asyncio.run(_topic_configs(topology.kafka_bootstrap(), sign_in, names))
    for topic in topics:
        mine = [p for p in states if p.topic == topic.name]
        assert len(mine) == topic.partitions, topic.name
        assert all(len(p.replicas) == 3 and p.fully_replicated for p in mine), mine
        assert configs[topic.name]["min.insync.replicas"] == "2", topic.name
    payment_tasks = next(t for t in topics if t.name == "payment-tasks")
    assert payment_tasks.partitions == 6


@pytest.fixture
def scratch_topic(topology: Topology, mesh: Mesh) -> Iterator[str]:
    """A topic of the test's own (RF 3, min ISR 2, 6 partitions), deleted afterwards."""
    name = f"test.kafka-cluster.{uuid.uuid4().hex[:8]}"
    spec = kafka.TopicSpec(name, partitions=6, replication_factor=3, min_insync_replicas=2)
    ensure_topics(topology, mesh.placement, mesh.state, (spec,))
    yield name

    async def delete() -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=topology.kafka_bootstrap(), **admin_options(mesh.state)
        )
        await admin.start()
        try:
            await admin.delete_topics([name])
        finally:
            await admin.close()

    asyncio.run(delete())


def _producer(bootstrap: str, state: StateDir) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **admin_options(state),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30000,
        retry_backoff_ms=200,
        linger_ms=5,
    )


def consume_all(
    topology: Topology, state: StateDir, topic: str, placement: Placement | None = None
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) in the topic, from the beginning to the end offsets of now (from the
    brokers of `placement`, by default the native mesh's)."""
    placement = placement or NativePlacement.of(topology)
    numbers = sorted({p.partition for p in partitions(topology, placement, state, [topic])})
    return asyncio.run(_consume_all(placement.kafka_bootstrap(topology), state, topic, numbers))


async def _consume_all(
    bootstrap: str, state: StateDir, topic: str, numbers: list[int]
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **admin_options(state),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in numbers]
        assert partitions, f"no partitions for {topic}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 60

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            assert time.monotonic() < deadline, "consuming back did not reach the end offsets"
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                records.extend((r.key, r.value) for r in batch)
        return records
    finally:
        await consumer.stop()


def test_a_message_produced_with_acks_all_is_consumed_back(
    topology: Topology, mesh: Mesh, scratch_topic: str
) -> None:
    async def produce() -> int:
        producer = _producer(topology.kafka_bootstrap(), mesh.state)
        await producer.start()
        try:
            meta = await producer.send_and_wait(scratch_topic, b"hello", key=b"order-1")
        finally:
            await producer.stop()
        return meta.offset

    assert asyncio.run(produce()) == 0
    assert consume_all(topology, mesh.state, scratch_topic) == [(b"order-1", b"hello")]


async def _stream_while_killing(
    mesh: Mesh, topic: str
) -> tuple[set[bytes], list[str], float, float]:
    """Send STREAM keyed messages at a steady pace; SIGKILL a broker a quarter of the way in.

    Returns the values acknowledged, the send errors, how long the stream took and the longest
    a message waited for its acknowledgement."""
    producer = _producer(mesh.topology.kafka_bootstrap(), mesh.state)
    await producer.start()
    acked: set[bytes] = set()
    errors: list[str] = []
    pending = []
    waits: list[float] = []
    started = time.monotonic()
    try:
        for i in range(STREAM):
            if i == STREAM // 4:
                assert mesh.kill(KILLED, hold=True) == [KILLED]
            value = f"message-{i:05d}".encode()
            sent_at = time.monotonic()
            future = await producer.send(topic, value, key=f"key-{i % 50}".encode())
            future.add_done_callback(lambda _f, t=sent_at: waits.append(time.monotonic() - t))
            pending.append((value, future))
            await asyncio.sleep(0.004)
        for value, future in pending:
            try:
                await future
                acked.add(value)
            except Exception as exc:  # a message the producer gave up on is not acknowledged
                errors.append(f"{value!r}: {exc!r}")
    finally:
        await producer.stop()
    return acked, errors, time.monotonic() - started, max(waits, default=0.0)


def test_a_killed_broker_loses_and_duplicates_nothing_acknowledged(
    mesh: Mesh, topology: Topology, scratch_topic: str
) -> None:
    try:
        acked, errors, took, longest = asyncio.run(_stream_while_killing(mesh, scratch_topic))
        records = consume_all(topology, mesh.state, scratch_topic)
    finally:
        restart_started = time.monotonic()
        mesh.start(KILLED, say=lambda _: None)
    rejoined = time.monotonic() - restart_started

    seen = Counter(value for _key, value in records)
    lost = acked - set(seen)
    duplicated = {value: n for value, n in seen.items() if n > 1}
    print(
        f"\nbroker kill: sent {STREAM} in {took:.1f}s (longest wait for an ack {longest:.1f}s), "
        f"acknowledged {len(acked)}, "
        f"send errors {len(errors)}, consumed {len(records)}, lost={len(lost)}, "
        f"duplicated={len(duplicated)}; {KILLED} ready again {rejoined:.1f}s after start"
    )
    assert not lost, sorted(lost)[:10]
    assert not duplicated, list(duplicated.items())[:10]
    assert len(acked) == STREAM, errors[:5]

    started = time.monotonic()
    summary = wait_for(
        lambda: (s := cluster_health(topology, mesh.placement, mesh.state)).startswith("ok,") and s,
        timeout=90,
        interval=0.5,
        what=f"every partition to be fully replicated after {KILLED} rejoined",
    )
    print(f"{summary} {time.monotonic() - started:.1f}s after {KILLED} was ready")
