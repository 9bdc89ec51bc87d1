"""Kafka data formatted before SASL comes up with every principal's SCRAM credentials, and keeps
its data (docs/security.md, "Kafka"). The runtime's own node specs, three nodes on free ports in
a temporary state dir (never the topology's: a mesh may be running): first as an earlier
shopmesh ran them (PLAINTEXT listeners, no authorizer, formatted without credentials, no marker
files), then as this one does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from mesh.components import kafka_auth
from mesh.components.kafka import load_topics
from mesh.placement import NativePlacement
from mesh.runtime import kafka, kafka_credentials, process
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.provision import KAFKA
from mesh.topology import KafkaNode, Topology, load
from tests.ratelimit_processes import binaries, free_port
from tests.support import wait_for

TOPIC = "order-events"
WRITTEN_BEFORE = [f"before-sasl-{n}".encode() for n in range(20)]


def before_sasl(make: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """A node's settings as shopmesh had them before SASL: one PLAINTEXT client listener, a
    PLAINTEXT controller listener, nobody's ACLs checked."""

    def settings(*args: Any) -> dict[str, str]:
        current = make(*args)
        earlier = {
            key: value
            for key, value in current.items()
            if key not in kafka_auth.AUTH_SETTINGS and not key.startswith("listener.name.")
        }
        client = f"{kafka_auth.CLIENT_LISTENER}://"
        return earlier | {
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": current["listeners"].replace(client, "PLAINTEXT://"),
            "advertised.listeners": current["advertised.listeners"].replace(client, "PLAINTEXT://"),
        }

    return settings


@pytest.fixture
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, StateDir]]:
    topology = load()
    nodes = tuple(
        KafkaNode(n.id, free_port(), free_port(), free_port()) for n in topology.kafka.nodes
    )
    topology = replace(topology, kafka=replace(topology.kafka, nodes=nodes))
    state = StateDir(tmp_path_factory.mktemp("kafka-sasl") / "state")
    state.ensure()
    yield topology, state
    kafka.stop_nodes(state, node_specs(topology, state))


def node_specs(topology: Topology, state: StateDir) -> list[ProcessSpec]:
    return kafka.node_specs(topology, NativePlacement.of(topology), state, binaries(KAFKA))


def run(specs: list[ProcessSpec], state: StateDir) -> None:
    for spec in specs:
        process.start(state, spec)
    for spec in specs:
        process.wait_ready(state, spec)


async def _produce(bootstrap: str, sign_in: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **sign_in)
    await producer.start()
    try:
        for value in WRITTEN_BEFORE:
            await producer.send_and_wait(TOPIC, value, key=b"order/before-sasl")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, sign_in: dict[str, Any]) -> list[bytes]:
    """Everything on the topic from the start of each partition, without a consumer group."""
    (spec,) = [t for t in load_topics() if t.name == TOPIC]
    partitions = [TopicPartition(TOPIC, p) for p in range(spec.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **sign_in)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=1000)
                values += [r.value for records in batches.values() for r in records if r.value]
        return values
    finally:
        await consumer.stop()


def test_data_formatted_before_sasl_gets_every_principals_credentials_and_keeps_its_data(
    small_cluster: tuple[Topology, StateDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology, state = small_cluster
    bootstrap = topology.kafka_bootstrap()
    with monkeypatch.context() as earlier:
        earlier.setattr(kafka, "server_properties", before_sasl(kafka.server_properties))
        earlier.setattr(kafka_auth, "jaas_settings", lambda _password: {})
        earlier.setattr(kafka_auth, "scram_arguments", lambda _passwords: [])
        earlier.setattr(kafka_auth, "admin_options", lambda _state: {})
        earlier.setattr(kafka, "ensure_acls", lambda _topology, _placement, _state: 0)
        specs = node_specs(topology, state)
        run(specs, state)
        asyncio.run(_produce(bootstrap, {}))
        kafka.stop_nodes(state, specs)
    for node in topology.kafka.nodes:
        kafka_credentials.scram_marker(state, node).unlink()  # an earlier shopmesh wrote none

    run(node_specs(topology, state), state)

    admin = kafka_auth.admin_options(state)
    assert sorted(asyncio.run(_read_all(bootstrap, admin))) == sorted(WRITTEN_BEFORE)
    # A service signs in as itself and reads what its ACLs grant; the brokers sign in to each
    # other to replicate.
    notifications = kafka_auth.options_of(state, "notifications")
    seen = asyncio.run(_read_all(bootstrap, notifications))
    assert sorted(seen) == sorted(WRITTEN_BEFORE)
    wait_for(
        lambda: kafka.replication_summary(
            kafka.partitions(topology, NativePlacement.of(topology), state)
        ).startswith("ok"),
        timeout=60,
        what="every partition fully replicated, the brokers signed in to each other",
    )

    # A controller logs a request it refuses in full: none was given the credentials.
    logs = [process.log_path(state, node.name) for node in topology.kafka.nodes]
    assert [log.name for log in logs if "saltedPassword" in log.read_text()] == []

    asked: list[object] = []

    async def record(*args: object) -> dict[str, Any]:
        asked.append(args)
        return {"results": []}

    monkeypatch.setattr(kafka_credentials, "_alter", record)
    assert kafka.ensure_credentials(topology, NativePlacement.of(topology), state) is None
    assert asked == [], "once the credentials are there, a start asks the controllers nothing"
