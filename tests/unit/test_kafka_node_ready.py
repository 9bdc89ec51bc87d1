"""A Kafka node is ready only when every broker serves: the controller still lists a restarted
broker's previous incarnation as live until its session runs out."""

from __future__ import annotations

import pytest

from mesh.placement import NativePlacement
from mesh.runtime import kafka
from mesh.runtime.paths import StateDir
from mesh.topology import load


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict:
    topology = load()
    ports = {n.controller_port: True for n in topology.kafka.nodes}
    ports |= {n.port: True for n in topology.kafka.nodes}
    monkeypatch.setattr(kafka, "_port_open", lambda _host, port: ports[port])
    monkeypatch.setattr(kafka.process, "running", lambda _state, _name: True)
    every = {n.id for n in topology.kafka.nodes}
    monkeypatch.setattr(kafka, "brokers_seen_by", lambda _placement, _state, _node: every)
    return {"topology": topology, "state": StateDir(tmp_path), "ports": ports}


def test_the_last_node_is_ready_when_every_broker_serves(cluster: dict) -> None:
    topology = cluster["topology"]
    placement = NativePlacement.of(topology)
    assert kafka.node_ready(topology, placement, cluster["state"], topology.kafka.nodes[-1]) is None


def test_a_broker_listed_live_but_not_serving_keeps_the_cluster_not_ready(cluster: dict) -> None:
    topology = cluster["topology"]
    restarted = topology.kafka.nodes[1]
    cluster["ports"][restarted.port] = False  # registration refused: a duplicate until timeout

    placement = NativePlacement.of(topology)
    reason = kafka.node_ready(topology, placement, cluster["state"], topology.kafka.nodes[-1])

    assert reason == f"{restarted.name}'s client port {restarted.port} not open yet"
