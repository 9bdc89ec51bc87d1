"""Kafka: topology section, server.properties rendering, topics.yaml parsing, health summary."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mesh.components import kafka
from mesh.placement import NativePlacement
from mesh.runtime.kafka import START_HEAP, PartitionState, node_spec, replication_summary
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import COMPONENTS, KAFKA_POM
from mesh.topology import TOPOLOGY_FILE, TopologyError, load, parse

RAW = yaml.safe_load(TOPOLOGY_FILE.read_text())


def test_three_nodes_with_ports_in_their_own_range() -> None:
    topology = load()
    nodes = topology.kafka.nodes
    assert [n.id for n in nodes] == [1, 2, 3]
    assert [n.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    for node in nodes:
        assert 29091 <= node.port <= 29399
        assert 29091 <= node.controller_port <= 29399
        assert topology.all_ports()[node.name] == node.port
        assert topology.all_ports()[f"{node.name} controller"] == node.controller_port
    assert topology.kafka_bootstrap() == ",".join(f"127.0.0.1:{n.port}" for n in nodes)


def test_a_kafka_port_colliding_with_another_is_rejected() -> None:
    raw = copy.deepcopy(RAW)
    raw["kafka"]["nodes"][1]["controller_port"] = raw["postgres"]["nodes"][0]["port"]
    with pytest.raises(TopologyError, match=r"postgres-1.*kafka-2 controller"):
        parse(raw)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("heap", "lots", "heap"),
        ("cluster_id", "not-an-id", "cluster_id"),
        (
            "nodes",
            [{"id": 1, "port": 29092, "controller_port": 29192, "metrics_port": 9601}],
            "at least 3 nodes",
        ),
    ],
)
def test_bad_kafka_settings_are_rejected(field: str, value: object, message: str) -> None:
    raw = copy.deepcopy(RAW)
    raw["kafka"][field] = value
    with pytest.raises(TopologyError, match=message):
        parse(raw)


def test_server_properties_of_a_combined_node(tmp_path: Path) -> None:
    topology = load()
    node = topology.kafka.nodes[1]
    props = kafka.server_properties(
        topology, NativePlacement.of(topology), node, tmp_path / "kafka-2"
    )

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == ",".join(
        f"{n.id}@127.0.0.1:{n.controller_port}" for n in topology.kafka.nodes
    )
    assert props["listeners"] == (
        f"CLIENT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
    )
    assert props["advertised.listeners"] == f"CLIENT://127.0.0.1:{node.port}"
    assert props["log.dirs"] == str(tmp_path / "kafka-2")
    for key, value in {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "unclean.leader.election.enable": "false",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
    }.items():
        assert props[key] == value, key


def test_rendered_properties_are_one_key_value_per_line() -> None:
    text = kafka.render_properties({"a.b": "1", "log.dirs": "C:\\data"})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["a.b=1", "log.dirs=C:\\\\data"]
    assert text.endswith("\n")


def test_the_cluster_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    topology = load()
    first = kafka.cluster_id(topology, state)
    assert len(first) == 22 and not first.startswith("-")
    assert kafka.cluster_id(topology, state) == first
    assert (tmp_path / "data" / "kafka-cluster-id").read_text().strip() == first


def test_node_command_line_sets_the_heap_log4j_and_the_jmx_exporter(tmp_path: Path) -> None:
    topology = load()
    agent = tmp_path / "agent" / "jmx_prometheus_javaagent.jar"
    binaries = {"java": Path("/usr/bin/java"), "libs": tmp_path / "libs", "jmx_agent": agent}
    node = topology.kafka.nodes[0]
    spec = node_spec(topology, NativePlacement.of(topology), StateDir(tmp_path), binaries, node)
    heap = topology.kafka.heap
    assert spec.argv[:3] == ["/usr/bin/java", f"-Xmx{heap}", f"-Xms{START_HEAP}"]
    assert "-XX:+UseSerialGC" in spec.argv
    assert f"-Dlog4j.configuration=file:{tmp_path}/config/kafka/log4j.properties" in spec.argv
    assert (
        f"-javaagent:{agent}=127.0.0.1:{node.metrics_port}:{kafka.JMX_EXPORTER_RULES}" in spec.argv
    )
    assert spec.argv[-2:] == ["kafka.Kafka", f"{tmp_path}/config/kafka/kafka-1.properties"]
    assert spec.ports == (29092, 29192, node.metrics_port)


def test_the_committed_topics_each_have_a_dlq() -> None:
    topics = {t.name: t for t in kafka.load_topics()}
    for name, partitions in {
        "user-events": 3,
        "order-events": 3,
        "payment-events": 3,
        "payment-tasks": 6,
    }.items():
        assert topics[name].partitions == partitions
        assert topics[f"{name}.dlq"].partitions == 1
    assert len(topics) == 8
    assert all(t.replication_factor == 3 and t.min_insync_replicas == 2 for t in topics.values())
    assert topics["payment-tasks"].configs == {"min.insync.replicas": "2"}


def test_topic_overrides_and_mistakes() -> None:
    raw = {"defaults": {"replication_factor": 3}, "topics": {"a": {"partitions": 2}}}
    assert kafka.parse_topics(raw) == (
        kafka.TopicSpec("a", 2, 3, 2),
        kafka.TopicSpec("a.dlq", 1, 3, 2),
    )
    with pytest.raises(kafka.TopicsError, match="DLQs are implied"):
        kafka.parse_topics({"topics": {"a.dlq": {"partitions": 1}}})
    with pytest.raises(kafka.TopicsError, match="min_insync_replicas"):
        kafka.parse_topics({"topics": {"a": {"partitions": 1, "min_insync_replicas": 4}}})
    with pytest.raises(kafka.TopicsError, match="no topics"):
        kafka.parse_topics({"topics": {}})


def _partition(p: int, leader: int, isr: tuple[int, ...]) -> PartitionState:
    return PartitionState("t", p, leader, (1, 2, 3), isr)


def test_replication_summary() -> None:
    full = [_partition(p, 1, (1, 2, 3)) for p in range(4)]
    assert replication_summary(full) == "ok, all 4 partitions fully replicated"
    behind = [*full[:2], _partition(2, 1, (1, 3)), _partition(3, -1, (1,))]
    assert replication_summary(behind) == (
        "2 of 4 partitions under-replicated, 1 without a leader (t-2, t-3)"
    )
    # A SIGKILLed broker stays in the ISR until the controller fences it: known dead, not ok.
    assert replication_summary(full, down=frozenset({2})) == (
        "4 of 4 partitions under-replicated (t-0, t-1, t-2, +1 more)"
    )


def test_the_kafka_component_is_pinned_by_its_pom() -> None:
    component = next(c for c in COMPONENTS if c.name == "kafka")
    assert component.version == "3.9.2"
    assert f"<kafka.version>{component.version}</kafka.version>" in KAFKA_POM.read_text()
    assert len(component.pin["pom_sha256"]) == 64
