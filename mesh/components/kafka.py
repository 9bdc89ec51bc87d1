"""Apache Kafka in KRaft mode: the mesh's topics (mesh/kafka/topics.yaml, each with its DLQ),
each node's server.properties and JMX exporter agent from the topology and a placement, the
cluster id (generated once into the state dir), and the consumer-group lookup both backends'
readiness uses.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient

from mesh.components.kafka_auth import AUTH_SETTINGS, CLIENT_LISTENER, CONTROLLER_LISTENER
from mesh.placement import Placement
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.topology import KafkaNode, Topology

TOPICS_FILE = REPO_ROOT / "mesh" / "kafka" / "topics.yaml"
JMX_EXPORTER_RULES = REPO_ROOT / "mesh" / "kafka" / "jmx-exporter.yml"
DLQ_SUFFIX = ".dlq"

# The broker/controller settings every node gets; the per-node ones are added by
# `server_properties`. Durability: a write acknowledged with acks=all is on at least 2 of the 3
# replicas, and an out-of-sync replica never becomes leader.
CLUSTER_SETTINGS: dict[str, str] = {
    "process.roles": "broker,controller",
    "controller.listener.names": CONTROLLER_LISTENER,
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    # The default 50 partitions are sized for big clusters; 10 is plenty here and keeps a
    # node's restart (and every leader election) short.
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "10",
    "unclean.leader.election.enable": "false",
    # Kafka's default, stated because consumers remember handled events a day longer
    # (services/common/messaging/consumer.py PROCESSED_RETENTION_S) to dedupe redeliveries.
    "log.retention.hours": "168",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "3",
    # Two cores for the whole mesh: fewer threads than the defaults (3 network, 8 I/O).
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "2",
    # The compacted topics here (__consumer_offsets, the transaction log) are a few MB; the
    # cleaner's default 128 MiB dedupe buffer would be a third of a node's heap.
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    **AUTH_SETTINGS,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int

    @property
    def configs(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync_replicas)}


class TopicsError(ValueError):
    pass


def parse_topics(raw: dict[str, Any]) -> tuple[TopicSpec, ...]:
    """Every topic of topics.yaml plus its `.dlq` twin, in file order (each topic, then its DLQ)."""
    defaults = raw.get("defaults") or {}
    rf = int(defaults.get("replication_factor", 3))
    min_isr = int(defaults.get("min_insync_replicas", 2))
    dlq_partitions = int(defaults.get("dlq_partitions", 1))
    topics: list[TopicSpec] = []
    for name, spec in (raw.get("topics") or {}).items():
        spec = spec or {}
        if name.endswith(DLQ_SUFFIX):
            raise TopicsError(f"{name}: DLQs are implied by their topic, do not list them")
        topic_rf = int(spec.get("replication_factor", rf))
        topic_min_isr = int(spec.get("min_insync_replicas", min_isr))
        if not 1 <= topic_min_isr <= topic_rf:
            raise TopicsError(f"{name}: min_insync_replicas {topic_min_isr} not in 1..{topic_rf}")
        partitions = int(spec["partitions"])
        if partitions < 1:
            raise TopicsError(f"{name}: partitions must be at least 1")
        topics.append(TopicSpec(name, partitions, topic_rf, topic_min_isr))
        topics.append(TopicSpec(name + DLQ_SUFFIX, dlq_partitions, topic_rf, topic_min_isr))
    if not topics:
        raise TopicsError("no topics listed")
    return tuple(topics)


def load_topics(path: Path = TOPICS_FILE) -> tuple[TopicSpec, ...]:
    return parse_topics(yaml.safe_load(path.read_text()))


def quorum_voters(topology: Topology, placement: Placement) -> str:
    return ",".join(
        f"{n.id}@{placement.host(n.name)}:{n.controller_port}" for n in topology.kafka.nodes
    )


def server_properties(
    topology: Topology, placement: Placement, node: KafkaNode, logs: Path
) -> dict[str, str]:
    """The node's settings but the secret ones (kafka_auth.jaas_settings): its listeners on the
    address the others reach it at (its host in the placement), advertised as such; the quorum's
    voters likewise."""
    host = placement.host(node.name)
    client = f"{CLIENT_LISTENER}://{host}:{node.port}"
    return {
        **CLUSTER_SETTINGS,
        "node.id": str(node.id),
        "controller.quorum.voters": quorum_voters(topology, placement),
        "listeners": f"{client},{CONTROLLER_LISTENER}://{host}:{node.controller_port}",
        "advertised.listeners": client,
        "log.dirs": str(logs),
    }


def render_properties(props: dict[str, str]) -> str:
    """Java properties text; values here never need escaping beyond backslashes."""
    lines = ["# Generated by mesh/runtime/kafka.py from mesh/topology.yaml; do not edit."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A random cluster id as Kafka makes them (Uuid.randomUuid: base64url, never a leading -)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def cluster_id_file(state: StateDir) -> Path:
    return state.data / "kafka-cluster-id"


def cluster_id(topology: Topology, state: StateDir) -> str:
    if topology.kafka.cluster_id != "generate":
        return topology.kafka.cluster_id
    path = cluster_id_file(state)
    if not path.exists():
        path.write_text(new_cluster_id() + "\n")
    return path.read_text().strip()


async def group_members(bootstrap: str, options: dict[str, Any], group: str) -> list[str]:
    """The client id of each member of a consumer group (natively and in compose's health
    check), asked with the client `options` (kafka_auth.client_options); a client id appears
    twice while a dead member's session has not timed out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **options)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return sorted(
        member["client_id"]
        for response in described
        for found in response.to_object()["groups"]
        for member in found["members"]
    )


def jmx_agent(placement: Placement, node: KafkaNode, agent: Path | str, rules: Path | str) -> str:
    """The JVM flag that serves the node's MBeans, as the `rules` file (JMX_EXPORTER_RULES)
    says, on its `metrics_port` (/metrics) for Prometheus; `agent` is the exporter's jar."""
    bind = f"{placement.listen(node.name)}:{node.metrics_port}"
    return f"-javaagent:{agent}={bind}:{rules}"
