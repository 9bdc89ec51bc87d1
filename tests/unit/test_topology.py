from __future__ import annotations

import copy

import pytest
import yaml

from mesh.runtime import sizes
from mesh.runtime.paths import StateDir
from mesh.topology import TOPOLOGY_FILE, TopologyError, load, parse

RAW = yaml.safe_load(TOPOLOGY_FILE.read_text())


def test_the_committed_topology_loads_and_has_unique_ports() -> None:
    topology = load()
    ports = list(topology.all_ports().values())
    assert len(ports) == len(set(ports))
    assert topology.service("orders").instances[0].id == "orders-1"


def test_a_port_given_twice_is_rejected_naming_both_owners() -> None:
    raw = copy.deepcopy(RAW)
    raw["edge"]["http_port"] = raw["consul"]["ports"]["https"]
    with pytest.raises(TopologyError, match=r"consul https.*edge http"):
        parse(raw)


def test_an_edge_route_to_an_unknown_service_is_rejected() -> None:
    raw = copy.deepcopy(RAW)
    raw["edge"]["routes"].append({"prefix": "/ghosts", "service": "ghosts", "timeout_ms": 1000})
    with pytest.raises(TopologyError, match="unknown 'ghosts'"):
        parse(raw)


def test_every_edge_route_goes_to_an_edge_upstream() -> None:
    edge = load().edge
    assert {r.service for r in edge.routes} <= set(edge.services)


def test_workers_run_on_a_known_database_with_their_instances() -> None:
    (workers,) = load().workers
    assert workers.name == "payments-worker"
    assert workers.group == "payment-workers"
    assert workers.instances == ("payments-worker-1", "payments-worker-2")
    raw = copy.deepcopy(RAW)
    raw["workers"]["payments-worker"]["database"] = "nowhere"
    with pytest.raises(TopologyError, match="unknown database 'nowhere'"):
        parse(raw)


def test_the_small_topology_runs_one_of_each_on_the_full_ones_ports() -> None:
    full = load()
    small = full.small()
    assert [len(s.instances) for s in small.services] == [1] * len(full.services)
    assert [len(w.instances) for w in small.workers] == [1] * len(full.workers)
    assert (len(small.edge.instances), len(small.consul_servers), len(small.postgres_nodes)) == (
        1,
        1,
        1,
    )
    assert small.kafka == full.kafka, "three Kafka nodes: the topics are replicated three times"
    assert small.all_ports().items() <= full.all_ports().items()
    assert [i.id for i in small.instances()] == [s.instances[0].id for s in full.services]


def test_mesh_up_remembers_the_size_for_every_later_command(tmp_path) -> None:
    state = StateDir(tmp_path)
    assert sizes.topology_for(state) == load(), "the full topology unless asked"
    sizes.choose(state, sizes.SMALL)
    assert sizes.topology_for(state) == load().small()
    sizes.choose(state, sizes.FULL)
    assert sizes.topology_for(state) == load()


def test_the_hosts_take_the_subnets_addresses_in_order_after_the_bridge() -> None:
    hosts = load().hosts
    assert str(hosts.subnet) == RAW["hosts"]["subnet"]
    assert hosts.gateway == str(next(hosts.subnet.hosts()))
    assert [h.name for h in hosts.apps] == RAW["hosts"]["apps"]
    assert hosts.balancer.name == RAW["hosts"]["balancer"]
    addresses = [hosts.gateway, *(h.address for h in hosts.all)]
    assert addresses == [str(a) for a in list(hosts.subnet.hosts())[: len(addresses)]]
    assert load().small().hosts == hosts


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apps": ["host-1", "host-1"]}, "a name of its own"),
        ({"apps": ["Host_1"]}, "lower-case letters"),
        ({"apps": ["a-very-long-name"]}, "at most 10"),
        ({"apps": []}, "at least one host"),
        ({"subnet": "10.86.0.0/30"}, "too few addresses for 4 hosts"),
    ],
)
def test_hosts_that_cannot_be_made_are_rejected(change: dict[str, object], message: str) -> None:
    raw = copy.deepcopy(RAW)
    raw["hosts"] |= change
    with pytest.raises(TopologyError, match=message):
        parse(raw)
