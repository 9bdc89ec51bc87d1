"""The hosts placement in the runtime (docs/hosts.md, "The mesh across the hosts"): which
network namespace each process starts in, a host's name meaning its processes, the placement
remembered in the state dir, and the configs that differ across hosts (each Consul agent's,
Prometheus's Consul targets, Patroni's pg_hba). Nothing is started."""

from __future__ import annotations

from collections import defaultdict
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from mesh.components import consul, patroni, prometheus
from mesh.placement import (
    CONSUL,
    LOOPBACK,
    PROMETHEUS,
    HostsPlacement,
    NativePlacement,
    consul_agent_on,
)
from mesh.runtime import hosting
from mesh.runtime.hosts import Network
from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import AgentCerts
from mesh.topology import load

SUBNET = IPv4Network("10.86.9.0/24")
CERTS = AgentCerts(Path("/ca.pem"), Path("/cert.pem"), Path("/key.pem"))


def fake_binaries() -> defaultdict[str, defaultdict[str, Path]]:
    """Paths only: the specs name the binaries, nothing runs them."""
    return defaultdict(lambda: defaultdict(lambda: Path("/nonexistent")))


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    made = StateDir(tmp_path / "state")
    made.ensure()
    return made


@pytest.fixture
def network() -> Network:
    return Network(hosting.on_subnet(load(), SUBNET).hosts, "shopmesh-u", "smu")


@pytest.fixture
def hosts_mesh(state: StateDir, network: Network) -> Mesh:
    topology = hosting.on_subnet(load(), SUBNET)
    return Mesh(topology, state, fake_binaries(), network)  # type: ignore[arg-type]


def test_the_placement_is_remembered_in_the_state_dir_until_forgotten(
    state: StateDir, network: Network
) -> None:
    assert hosting.chosen(state) == hosting.NATIVE
    assert hosting.network(state, load()) is None
    hosting.remember(state, network)
    assert hosting.chosen(state) == hosting.HOSTS
    assert hosting.network(state, load()) == network
    assert isinstance(hosting.placement(load(), network), HostsPlacement)
    hosting.forget(state)
    assert hosting.network(state, load()) is None
    assert isinstance(hosting.placement(load(), None), NativePlacement)


def test_every_process_starts_in_the_namespace_of_its_components_host(hosts_mesh: Mesh) -> None:
    placement = hosts_mesh.placement
    assert isinstance(placement, HostsPlacement)
    specs = hosts_mesh.specs()
    for spec in specs:
        component = spec.name.removesuffix("-sidecar")
        if spec.name == "consul-sd":
            component = PROMETHEUS  # Prometheus's discovery runs beside it
        assert spec.namespace == f"shopmesh-u-{placement.host_of(component).name}", spec.name
    names = [spec.name for spec in specs]
    assert [n for n in names if n.startswith("consul-agent-")] == [
        consul_agent_on(host.name) for host in hosts_mesh.topology.hosts.all
    ]
    assert CONSUL not in names


def test_a_hosts_name_means_every_process_on_it(hosts_mesh: Mesh) -> None:
    namespace = "shopmesh-u-host-2"
    on_host = hosts_mesh.resolve("host-2")
    assert on_host == [s.name for s in hosts_mesh.specs() if s.namespace == namespace]
    assert "consul-agent-host-2" in on_host
    assert hosts_mesh.resolve("front") == ["consul-agent-front", "balancer"]


def test_the_native_mesh_runs_every_process_here_with_its_one_agent(state: StateDir) -> None:
    native = Mesh(load(), state, fake_binaries())  # type: ignore[arg-type]
    specs = native.specs()
    assert all(spec.namespace is None for spec in specs)
    assert [s.name for s in specs if s.name.startswith("consul") and "server" not in s.name] == [
        CONSUL,
        "consul-sd",
    ]


def test_each_hosts_agent_serves_its_api_on_its_loopback_and_gossips_on_its_address() -> None:
    topology = hosting.on_subnet(load(), SUBNET)
    placement = HostsPlacement.of(topology)
    for agent in placement.consul_agents():
        config = consul.agent_config(topology, placement, Path("/d"), CERTS, agent)
        address = placement.host_of(agent).address
        assert config["client_addr"] == LOOPBACK
        assert (config["bind_addr"], config["advertise_addr"]) == (address, address)
        assert config["node_name"] == agent
        servers = {f"{placement.address(s.name)}:{s.serf_lan}" for s in topology.consul_servers}
        assert set(config["retry_join"]) == servers
    for server in topology.consul_servers:
        config = consul.server_config(topology, placement, server, Path("/d"), CERTS)
        assert config["client_addr"] == LOOPBACK
        assert config["bind_addr"] == placement.address(server.name)
        others = {
            f"{placement.address(s.name)}:{s.serf_lan}"
            for s in topology.consul_servers
            if s != server
        }
        assert set(config["retry_join"]) == others


def test_prometheus_scrapes_the_consul_agents_on_its_own_host_only() -> None:
    topology = hosting.on_subnet(load(), SUBNET)
    placement = HostsPlacement.of(topology)
    config = prometheus.config(
        topology,
        placement,
        rule_files=[],
        discovery=prometheus.FileDiscovery(Path("/sd")),
        consul_token_file="/t",
        consul_ca_file="/ca",
    )
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "consul"]
    scraped = {target["labels"]["instance"] for target in job["static_configs"]}
    host = placement.host_of(PROMETHEUS)
    on_its_host = {c for c in placement.components_on(host.name) if c.startswith("consul")}
    assert scraped == on_its_host
    assert consul_agent_on(host.name) in scraped
    for target in job["static_configs"]:
        assert target["targets"][0].startswith(f"{LOOPBACK}:")


def test_patroni_trusts_the_hosts_subnet_across_hosts_and_one_address_natively() -> None:
    topology = load()
    node = topology.postgres_nodes[0]
    across = HostsPlacement.of(hosting.on_subnet(topology, SUBNET))
    native = NativePlacement.of(topology)
    assert across.clients_of(node.name) == str(SUBNET)
    assert native.clients_of(node.name) == f"{topology.bind_host}/32"
    lines = patroni.hba_lines(topology, across.clients_of(node.name))
    assert all(line.split()[3] == str(SUBNET) for line in lines)
