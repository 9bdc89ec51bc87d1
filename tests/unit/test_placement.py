"""Placements (mesh/placement.py): where each component of the topology binds and how the others
reach it; natively all on the bind host, in compose by container names and fixed addresses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from mesh.components import consul, edge, edge_metrics, jaeger, kafka, prometheus, ratelimit
from mesh.components.edge import EdgeFiles
from mesh.envoy_tracing import OTLP_CLUSTER
from mesh.placement import (
    ANY,
    BALANCER,
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
    HostsPlacement,
    KubernetesPlacement,
    NativePlacement,
    Placement,
    PlacementError,
    consul_agent_on,
)
from mesh.runtime import protos
from mesh.runtime.paths import StateDir
from mesh.topology import Hosts, Topology, load
from mesh.wiring import Wiring, instance_env


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def components(topology: Topology) -> list[str]:
    """Every component name a generator may ask a placement about."""
    names = [CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, WATCHDOG, BALANCER]
    names += [e.id for e in topology.edge.instances]
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
    assert native.consul_http_addr(topology) == f"https://{host}:{topology.consul_ports.https}"
    server = topology.consul_servers[0]
    assert native.consul_server_addr(server) == f"https://{host}:{server.https}"
    assert native.kafka_bootstrap(topology) == ",".join(
        f"{host}:{n.port}" for n in topology.kafka.nodes
    )
    assert native.otlp_endpoint(topology) == f"http://{host}:{topology.jaeger.ports.otlp_grpc}"


def test_compose_reaches_components_by_their_container_names(topology: Topology) -> None:
    compose = ComposePlacement.of(topology)
    named = [CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, BALANCER]
    named += [n.name for n in topology.kafka.nodes]
    named += [i.id for i in topology.instances()]
    named += [name for workers in topology.workers for name in workers.instances]
    for component in named:
        assert compose.host(component) == component
    assert compose.consul_http_addr(topology) == f"https://consul:{topology.consul_ports.https}"
    server = topology.consul_servers[0]
    assert compose.consul_server_addr(server) == f"https://{server.name}:{server.https}"
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
    first_edge, *more_edges = (e.id for e in topology.edge.instances)
    fixed = [CONSUL, first_edge, JAEGER, *(i.id for i in topology.instances()), RATELIMIT]
    # The Consul servers, then the edges after the first, last: adding them moved no address.
    fixed += [s.name for s in topology.consul_servers]
    fixed += more_edges
    addresses = [compose.address(component) for component in fixed]
    hosts = [str(h) for h in COMPOSE_SUBNET.hosts()]
    assert addresses == hosts[1 : 1 + len(fixed)]  # after the bridge's gateway
    assert not any(a in {str(h) for h in COMPOSE_DYNAMIC_RANGE.hosts()} for a in addresses)
    # Jaeger by address: the endpoint goes into Envoy's static clusters.
    assert compose.otlp_endpoint(topology) == (
        f"http://{compose.address(JAEGER)}:{topology.jaeger.ports.otlp_grpc}"
    )


def test_in_compose_the_edges_are_reached_by_address_and_the_watchdog_does_not_run(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    for e in topology.edge.instances:
        assert compose.host(e.id) == compose.address(e.id)
    assert compose.host(BALANCER) == BALANCER
    assert not compose.runs(WATCHDOG)
    assert compose.runs(CONSUL)


def test_a_component_without_a_fixed_address_in_compose_says_so(topology: Topology) -> None:
    compose = ComposePlacement.of(topology)
    with pytest.raises(PlacementError, match="kafka-1 has no fixed address"):
        compose.address("kafka-1")


# --- a third placement, made up here: two hosts -----------------------------------------------


class TwoHosts(Placement):
    """Two hosts, each with its own address (as network namespaces would have): the shared
    components, the edge and the first Kafka and Postgres nodes on `a`, the rest on `b`. Every
    process binds its host's address and is reached there; no names resolve."""

    ADDRESSES: ClassVar[dict[str, str]] = {"a": "10.0.0.1", "b": "10.0.0.2"}
    ON_A: ClassVar[set[str]] = {
        CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, WATCHDOG, BALANCER, "edge-1",
        "kafka-1", "postgres-1",
    }  # fmt: skip

    def host_of(self, component: str) -> str:
        return "a" if component in self.ON_A else "b"

    def address(self, component: str) -> str:
        return self.ADDRESSES[self.host_of(component)]

    listen = host = admin = address

    def public(self) -> str:
        return self.address("edge-1")


A, B = TwoHosts.ADDRESSES["a"], TwoHosts.ADDRESSES["b"]


def test_kafka_nodes_listen_on_their_own_host_and_know_where_the_others_are(
    topology: Topology,
) -> None:
    first, second = topology.kafka.nodes[:2]
    props = kafka.server_properties(topology, TwoHosts(), second, Path("/data"))
    assert props["listeners"] == (
        f"CLIENT://{B}:{second.port},CONTROLLER://{B}:{second.controller_port}"
    )
    assert props["advertised.listeners"] == f"CLIENT://{B}:{second.port}"
    assert props["controller.quorum.voters"].startswith(f"{first.id}@{A}:{first.controller_port},")
    assert TwoHosts().kafka_bootstrap(topology).split(",")[:2] == [
        f"{A}:{first.port}",
        f"{B}:{second.port}",
    ]


def test_an_instance_on_one_host_registers_there_and_finds_the_shared_ones_on_the_other(
    topology: Topology,
) -> None:
    instance = topology.service("payments").instances[1]
    wiring = Wiring(
        TwoHosts(),
        database_password=lambda db: "pw",
        auth_seed_file=lambda: "/s",
        consul_token_file=lambda service: f"/t/{service}",
        consul_ca_file="/s/ca.pem",
        kafka_password_file=lambda principal: f"/k/{principal}",
    )
    env = instance_env(topology, wiring, instance)
    assert env["SHOPMESH_BIND_HOST"] == B
    assert env["SHOPMESH_CONSUL_HTTP_ADDR"] == f"https://{A}:{topology.consul_ports.https}"
    assert env["SHOPMESH_CONSUL_CA_FILE"] == "/s/ca.pem"
    first, second = topology.postgres_nodes
    assert env["SHOPMESH_DATABASE_URL"].endswith(
        f"@{A}:{first.port},{B}:{second.port}/payments?target_session_attrs=read-write"
    )
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{A}:{topology.jaeger.ports.otlp_grpc}"
    registration = json.loads(env["SHOPMESH_REGISTRATION"])
    sidecar = registration["Connect"]["SidecarService"]
    assert registration["Address"] == sidecar["Address"] == B
    assert registration["Check"]["HTTP"] == f"http://{B}:{instance.metrics_port}/health"
    # The sidecar's upstream listeners stay in the instance's own namespace.
    assert {u["LocalBindAddress"] for u in sidecar["Proxy"]["Upstreams"]} == {LOOPBACK}
    otlp = json.loads(sidecar["Proxy"]["Config"]["envoy_extra_static_clusters_json"])
    endpoint = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["address"] == A


def test_a_sidecar_reaches_consul_on_the_other_host(topology: Topology) -> None:
    instance = topology.service("orders").instances[0]
    connect = consul.ConnectEnvoy(instance.id, Path("consul"), Path("/s/ca.pem"), Path("/t/o"))
    argv = consul.sidecar_argv(
        topology, TwoHosts(), connect, admin_port=19100, envoy_bin=Path("envoy")
    )
    bootstrap = consul.bootstrap_argv(topology, TwoHosts(), connect)
    for command in (argv, bootstrap):
        assert f"-http-addr=https://{A}:{topology.consul_ports.https}" in command
        assert "-ca-file=/s/ca.pem" in command
        assert f"-grpc-addr=https://{A}:{topology.consul_ports.grpc}" in command
    assert argv[argv.index("-admin-bind") + 1] == f"{B}:19100"


def test_the_edge_listens_on_its_host_and_calls_the_rate_limit_service_and_jaeger_there(
    topology: Topology,
) -> None:
    protos.ensure_generated()
    files = EdgeFiles(
        Path("/edge.pem"), Path("/edge-key.pem"), protos.DESCRIPTOR_SET, Path("/edge-1.sock")
    )
    config = edge.envoy_config(topology, TwoHosts(), files, topology.edge.instance("edge-1"))
    listeners = config["static_resources"]["listeners"]
    assert {lis["address"]["socket_address"]["address"] for lis in listeners} == {A}
    clusters = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        for c in config["static_resources"]["clusters"]
    }
    assert clusters.pop(edge_metrics.ADMIN_CLUSTER) == {"pipe": {"path": "/edge-1.sock"}}
    assert clusters.pop(edge.RATELIMIT_CLUSTER)["socket_address"]["address"] == A
    assert clusters.pop(OTLP_CLUSTER)["socket_address"]["address"] == A
    assert {c["socket_address"]["address"] for c in clusters.values()} == {LOOPBACK}
    assert edge.issuer(topology, TwoHosts()).startswith(f"https://{A}:")


def test_prometheus_scrapes_each_target_on_its_host(topology: Topology, tmp_path: Path) -> None:
    config = prometheus.config(
        topology,
        TwoHosts(),
        rule_files=[],
        discovery=prometheus.FileDiscovery(tmp_path),
        consul_token_file="/token",
        consul_ca_file="/ca.pem",
    )
    targets = {
        group["labels"]["instance"]: group["targets"][0]
        for job in config["scrape_configs"]
        for group in job.get("static_configs", [])
    }
    first, second = topology.kafka.nodes[:2]
    assert targets[first.name] == f"{A}:{first.metrics_port}"
    assert targets[second.name] == f"{B}:{second.metrics_port}"
    assert targets["consul"] == f"{A}:{topology.consul_ports.https}"
    worker = topology.workers[0].instances[0]
    assert targets[worker] == f"{B}:{topology.workers[0].metrics_port(worker)}"


def test_jaeger_and_the_rate_limit_service_bind_their_host(topology: Topology) -> None:
    endpoints = jaeger.config(topology, TwoHosts())["receivers"]["otlp"]["protocols"]
    assert {p["endpoint"].rsplit(":", 1)[0] for p in endpoints.values()} == {A}
    env = ratelimit.service_env(topology, TwoHosts(), StateDir(Path("/state")))
    assert env["GRPC_HOST"] == A
    assert env["REDIS_URL"] == f"{A}:{topology.redis_port}"


# --- the hosts placement: the topology spread over network-namespace hosts ----------------------


@pytest.fixture(params=["full", "small"], scope="module")
def sized(request: pytest.FixtureRequest, topology: Topology) -> Topology:
    return topology if request.param == "full" else topology.small()


def apart_groups(topology: Topology) -> dict[str, list[str]]:
    """What issue #16 wants each on a host of its own."""
    groups = {
        "consul servers": [s.name for s in topology.consul_servers],
        "kafka nodes": [n.name for n in topology.kafka.nodes],
        "postgres nodes": [n.name for n in topology.postgres_nodes],
        "edges": [e.id for e in topology.edge.instances],
    }
    groups |= {s.name: [i.id for i in s.instances] for s in topology.services}
    groups |= {w.name: list(w.instances) for w in topology.workers}
    return groups


def test_the_hosts_placement_keeps_apart_what_must_not_fall_together(sized: Topology) -> None:
    placement = HostsPlacement.of(sized)
    for group, members in apart_groups(sized).items():
        hosts = [placement.host_of(member).name for member in members]
        assert len(set(hosts)) == len(hosts), (group, hosts)


def test_the_three_consul_servers_and_the_kafka_nodes_each_have_a_host_of_their_own(
    topology: Topology,
) -> None:
    placement = HostsPlacement.of(topology)
    apps = {host.name for host in topology.hosts.apps}
    assert len(topology.consul_servers) == 3
    assert {placement.host_of(s.name).name for s in topology.consul_servers} == apps
    # One broker per host: as many as hosts, on all of them.
    assert {placement.host_of(n.name).name for n in topology.kafka.nodes} == apps
    assert len(topology.kafka.nodes) == len(apps)


def test_the_balancer_is_alone_on_its_host_with_that_hosts_consul_agent(sized: Topology) -> None:
    placement = HostsPlacement.of(sized)
    balancer_host = sized.hosts.balancer
    assert placement.host_of(BALANCER) == balancer_host
    assert placement.components_on(balancer_host.name) == [
        consul_agent_on(balancer_host.name),
        BALANCER,
    ]
    assert placement.public() == balancer_host.address


def test_every_host_has_a_consul_client_agent_that_what_runs_there_uses(sized: Topology) -> None:
    placement = HostsPlacement.of(sized)
    for host in sized.hosts.all:
        agent = consul_agent_on(host.name)
        assert placement.host_of(agent) == host
        for component in placement.components_on(host.name):
            assert placement.consul_agent(component) == agent
    instance = sized.instances()[0]
    # Its host's agent, on that host's loopback.
    assert placement.consul_http_addr(sized, instance.id) == (
        f"https://{LOOPBACK}:{sized.consul_ports.https}"
    )
    assert placement.consul_agent_address(instance.id) == LOOPBACK
    with pytest.raises(PlacementError, match="each host has its own"):
        placement.address(CONSUL)


def test_every_consul_agent_keeps_its_api_on_its_hosts_loopback_and_gossips_on_its_address(
    sized: Topology,
) -> None:
    placement = HostsPlacement.of(sized)
    agents = [*placement.consul_agents(), *(s.name for s in sized.consul_servers)]
    assert placement.consul_agents() == [consul_agent_on(h.name) for h in sized.hosts.all]
    for agent in agents:
        assert placement.listen(agent) == placement.consul_api_host(agent) == LOOPBACK
        address = placement.host_of(agent).address
        assert placement.address(agent) == placement.host(agent) == address
        assert placement.reaches(agent, agent)
        elsewhere = [c for c in placement.on if placement.host_of(c) != placement.host_of(agent)]
        assert elsewhere
        assert not any(placement.reaches(client, agent) for client in elsewhere)
    instance = sized.instances()[0]
    assert all(placement.reaches(c, instance.id) for c in placement.on)


def test_every_component_is_placed_and_answers_its_hosts_address(sized: Topology) -> None:
    placement = HostsPlacement.of(sized)
    placed = [c for c in components(sized) if c not in (CONSUL, POSTGRES)]
    placed += [n.name for n in sized.postgres_nodes]
    addresses = {host.address for host in sized.hosts.all}
    for component in placed:
        address = placement.address(component)
        assert address in addresses, component
        assert placement.listen(component) == placement.host(component) == address
        # Admin APIs: only the host itself reaches them.
        assert placement.admin(component) == LOOPBACK
    servers = {s.name for s in sized.consul_servers}
    assert sorted(placement.on) == sorted(
        set(placed) | servers | {consul_agent_on(h.name) for h in sized.hosts.all}
    )


def test_the_full_mesh_is_spread_evenly_over_the_app_hosts(topology: Topology) -> None:
    placement = HostsPlacement.of(topology)
    loads = [len(placement.components_on(host.name)) for host in topology.hosts.apps]
    assert max(loads) - min(loads) <= 1, loads


def test_a_group_larger_than_the_hosts_is_refused(topology: Topology) -> None:
    one_host = replace(topology, hosts=Hosts.on(topology.hosts.subnet, ("solo",), "front"))
    with pytest.raises(PlacementError, match="must each have a host of their own"):
        HostsPlacement.of(one_host)


def test_kafka_nodes_listen_on_their_hosts_addresses_in_the_hosts_placement(
    topology: Topology,
) -> None:
    placement = HostsPlacement.of(topology)
    node = topology.kafka.nodes[1]
    props = kafka.server_properties(topology, placement, node, Path("/data"))
    address = placement.host_of(node.name).address
    assert address != topology.bind_host
    assert props["advertised.listeners"] == f"CLIENT://{address}:{node.port}"


def test_on_kubernetes_everything_is_reached_by_its_service_name_and_binds_the_pod() -> None:
    topology = load()
    kube = KubernetesPlacement("shop.example.org", "kafka", frozenset({POSTGRES, JAEGER}))
    assert kube.listen("orders-1") == ANY
    assert kube.admin("edge-1") == LOOPBACK
    assert (kube.host(POSTGRES), kube.address(JAEGER)) == ("postgres", "jaeger")
    # consul-k8s's servers (no client agents), Strimzi's bootstrap Service.
    assert kube.consul_http_addr(topology, "orders-1") == "https://consul-server:8501"
    port = topology.kafka.nodes[0].port
    assert kube.kafka_bootstrap(topology) == f"kafka-kafka-bootstrap:{port}"
    assert kube.postgres_endpoints(topology) == [f"postgres:{topology.postgres_port}"]
    assert kube.otlp_endpoint(topology) == f"http://jaeger:{topology.jaeger.ports.otlp_grpc}"
    assert kube.public() == "shop.example.org"
    # What the chart does not run is not there: no name to reach it by.
    assert not kube.runs(RATELIMIT) and not kube.runs(WATCHDOG) and kube.runs("orders-1")
    with pytest.raises(PlacementError, match="ratelimit has no Service in the chart"):
        kube.host(RATELIMIT)


def test_on_kubernetes_an_instance_binds_its_pod_and_leaves_registration_to_consul_k8s() -> None:
    topology = load()
    kube = KubernetesPlacement("shop.example.org", "kafka", frozenset({POSTGRES, JAEGER}))
    wiring = Wiring(
        placement=kube,
        database_password=lambda database: "pw",
        auth_seed_file=lambda: "/seed.json",
        consul_token_file=lambda service: "/token",
        consul_ca_file="/ca.pem",
        kafka_password_file=lambda principal: "/kafka",
        kafka_ca_file="/kafka-ca.pem",
        self_registration=False,
    )
    env = instance_env(topology, wiring, topology.service("orders").instances[0])
    assert env["SHOPMESH_BIND_HOST"] == ANY
    assert env["SHOPMESH_CONSUL_REGISTER"] == "false"
    assert "SHOPMESH_REGISTRATION" not in env
    assert env["SHOPMESH_KAFKA_CA_FILE"] == "/kafka-ca.pem"
    assert env["SHOPMESH_DATABASE_URL"].startswith("postgresql://orders:pw@postgres:")
