"""Placements (mesh/placement.py): where each component of the topology binds and how the others
reach it; natively all on the bind host, in compose by container names and fixed addresses."""

from __future__ import annotations

import pytest

from mesh.placement import (
    ANY,
    COMPOSE_DYNAMIC_RANGE,
    COMPOSE_SUBNET,
    CONSUL,
    JAEGER,
    LOOPBACK,
    POSTGRES,
    PROMETHEUS,
    RATELIMIT,
    REDIS,
    WATCHDOG,
    ComposePlacement,
    NativePlacement,
    PlacementError,
)
from mesh.topology import Topology, load


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def components(topology: Topology) -> list[str]:
    """Every component name a generator may ask a placement about."""
    names = [CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, WATCHDOG, topology.edge.id]
    names += [n.name for n in topology.kafka.nodes]
    names += [i.id for i in topology.instances()]
    names += [name for workers in topology.workers for name in workers.instances]
    return names


def test_the_native_placement_answers_the_bind_host_everywhere(topology: Topology) -> None:
    native = NativePlacement.of(topology)
    for component in components(topology):
        answers = {
            native.listen(component),
            native.address(component),
            native.host(component),
            native.admin(component),
        }
        assert answers == {topology.bind_host}, component
        assert native.runs(component)
    assert native.public() == topology.bind_host


def test_the_native_placement_reaches_consul_kafka_and_jaeger_on_the_bind_host(
    topology: Topology,
) -> None:
    native = NativePlacement.of(topology)
    host = topology.bind_host
    assert native.consul_http_addr(topology) == f"http://{host}:{topology.consul_ports.http}"
    assert native.kafka_bootstrap(topology) == ",".join(
        f"{host}:{n.port}" for n in topology.kafka.nodes
    )
    assert native.otlp_endpoint(topology) == f"http://{host}:{topology.jaeger.ports.otlp_grpc}"


def test_compose_reaches_components_by_their_container_names(topology: Topology) -> None:
    compose = ComposePlacement.of(topology)
    named = [CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT]
    named += [n.name for n in topology.kafka.nodes]
    named += [i.id for i in topology.instances()]
    named += [name for workers in topology.workers for name in workers.instances]
    for component in named:
        assert compose.host(component) == component
    assert compose.consul_http_addr(topology) == f"http://consul:{topology.consul_ports.http}"
    assert compose.kafka_bootstrap(topology) == ",".join(
        f"{n.name}:{n.port}" for n in topology.kafka.nodes
    )


def test_compose_binds_every_interface_and_keeps_admin_apis_on_loopback(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    for component in components(topology):
        assert compose.listen(component) == ANY
        assert compose.admin(component) == LOOPBACK
    # Published on the machine's loopback, as natively.
    assert compose.public() == topology.bind_host


def test_compose_gives_fixed_addresses_in_topology_order_outside_the_dynamic_range(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    fixed = [CONSUL, topology.edge.id, JAEGER, *(i.id for i in topology.instances()), RATELIMIT]
    addresses = [compose.address(component) for component in fixed]
    hosts = [str(h) for h in COMPOSE_SUBNET.hosts()]
    assert addresses == hosts[1 : 1 + len(fixed)]  # after the bridge's gateway
    assert not any(a in {str(h) for h in COMPOSE_DYNAMIC_RANGE.hosts()} for a in addresses)
    # Jaeger by address: the endpoint goes into Envoy's static clusters.
    assert compose.otlp_endpoint(topology) == (
        f"http://{compose.address(JAEGER)}:{topology.jaeger.ports.otlp_grpc}"
    )


def test_in_compose_the_edge_is_reached_by_address_and_the_watchdog_does_not_run(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    # Its compose service is `edge`, not its id: no name of its own resolves.
    assert compose.host(topology.edge.id) == compose.address(topology.edge.id)
    assert not compose.runs(WATCHDOG)
    assert compose.runs(CONSUL)


def test_a_component_without_a_fixed_address_in_compose_says_so(topology: Topology) -> None:
    compose = ComposePlacement.of(topology)
    with pytest.raises(PlacementError, match="kafka-1 has no fixed address"):
        compose.address("kafka-1")
