"""Consul's three servers and the host's client agent: their configs, the topology's checks,
where each is placed, and what scrapes them (mesh/components/consul.py, mesh/topology.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from mesh.components import consul, prometheus
from mesh.placement import CONSUL, ComposePlacement, NativePlacement, Placement
from mesh.runtime.tls import AgentCerts
from mesh.topology import TOPOLOGY_FILE, Topology, TopologyError, load, parse

RAW = yaml.safe_load(TOPOLOGY_FILE.read_text())


CERTS = AgentCerts(Path("/s/ca.pem"), Path("/s/agent.pem"), Path("/s/agent-key.pem"))


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def test_each_server_bootstraps_with_the_others_on_ports_and_a_data_dir_of_its_own(
    topology: Topology,
) -> None:
    native = NativePlacement.of(topology)
    servers = topology.consul_servers
    configs = [
        consul.server_config(topology, native, s, Path(f"/d/{s.name}"), CERTS) for s in servers
    ]
    assert [c["node_name"] for c in configs] == [s.name for s in servers]
    assert len({c["data_dir"] for c in configs}) == len(servers)
    assert all(c["server"] and c["bootstrap_expect"] == len(servers) == 3 for c in configs)
    for server, config in zip(servers, configs, strict=True):
        others = {f"{topology.bind_host}:{s.serf_lan}" for s in servers if s != server}
        assert set(config["retry_join"]) == others
        ports = config["ports"]
        assert (ports["server"], ports["serf_lan"], ports["https"]) == (
            server.server,
            server.serf_lan,
            server.https,
        )
        # xDS and DNS are the client agent's: a server opens neither.
        assert ports["grpc"] == ports["dns"] == -1


def test_the_client_agent_is_no_server_and_joins_every_server(topology: Topology) -> None:
    config = consul.agent_config(topology, NativePlacement.of(topology), Path("/d/agent"), CERTS)
    assert config["server"] is False
    assert "bootstrap_expect" not in config
    assert config["retry_join"] == [
        f"{topology.bind_host}:{s.serf_lan}" for s in topology.consul_servers
    ]
    assert config["ports"]["grpc_tls"] == topology.consul_ports.grpc
    assert config["ports"]["grpc"] == -1
    assert config["node_name"] not in {s.name for s in topology.consul_servers}


def test_every_servers_port_is_in_the_topologys_ports(topology: Topology) -> None:
    ports = topology.all_ports()
    for server in topology.consul_servers:
        for kind in ("server", "serf_lan", "https"):
            assert ports[f"{server.name} {kind}"] == getattr(server, kind)


def test_two_servers_are_refused_as_no_quorum_that_outlives_one() -> None:
    raw = copy.deepcopy(RAW)
    raw["consul"]["servers"] = raw["consul"]["servers"][:2]
    with pytest.raises(TopologyError, match="odd number of servers, at least 3"):
        parse(raw)


def test_a_servers_port_given_to_another_is_refused_naming_both() -> None:
    raw = copy.deepcopy(RAW)
    raw["consul"]["servers"][1]["https"] = raw["consul"]["ports"]["https"]
    with pytest.raises(TopologyError, match=r"consul https.*consul-server-2 https"):
        parse(raw)


def test_in_compose_each_server_has_a_name_and_a_fixed_address_and_joins_by_name(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    servers = topology.consul_servers
    addresses = {compose.address(s.name) for s in servers}
    assert len(addresses) == len(servers)
    assert compose.address(CONSUL) not in addresses
    first = consul.server_config(topology, compose, servers[0], Path("/consul/data"), CERTS)
    assert first["advertise_addr"] == compose.address(servers[0].name)
    assert first["retry_join"] == [f"{s.name}:{s.serf_lan}" for s in servers[1:]]


class AgentPerHost(Placement):
    """Two hosts, `a` and `b`, each with a client agent of its own (`consul` on a, `consul-b`
    on b), the servers on a: what a placement of several hosts answers."""

    ADDRESSES: ClassVar[dict[str, str]] = {"a": "10.0.0.1", "b": "10.0.0.2"}

    def host_of(self, component: str) -> str:
        return "b" if component in ("consul-b", "orders-1") else "a"

    def address(self, component: str) -> str:
        return self.ADDRESSES[self.host_of(component)]

    listen = host = admin = address

    def public(self) -> str:
        return self.address("edge-1")

    def consul_agent(self, component: str) -> str:
        return "consul-b" if self.host_of(component) == "b" else CONSUL


def test_a_component_talks_to_its_own_hosts_agent(topology: Topology) -> None:
    placement = AgentPerHost()
    instance = topology.service("orders").instances[0]
    b = AgentPerHost.ADDRESSES["b"]
    assert placement.consul_http_addr(topology, instance.id) == (
        f"https://{b}:{topology.consul_ports.https}"
    )
    connect = consul.ConnectEnvoy(instance.id, Path("consul"), CERTS.ca_cert, Path("/t/orders"))
    argv = consul.bootstrap_argv(topology, placement, connect)
    assert f"-http-addr=https://{b}:{topology.consul_ports.https}" in argv
    assert f"-grpc-addr=https://{b}:{topology.consul_ports.grpc}" in argv
    assert f"-ca-file={CERTS.ca_cert}" in argv
    assert f"-grpc-ca-file={CERTS.ca_cert}" in argv


def test_prometheus_scrapes_the_agent_and_every_server(topology: Topology, tmp_path: Path) -> None:
    native = NativePlacement.of(topology)
    config = prometheus.config(
        topology,
        native,
        rule_files=[],
        discovery=prometheus.FileDiscovery(tmp_path),
        consul_token_file="/token",
        consul_ca_file="/ca.pem",
    )
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "consul")
    targets = {g["labels"]["instance"]: g["targets"] for g in job["static_configs"]}
    host = topology.bind_host
    assert targets == {
        CONSUL: [f"{host}:{topology.consul_ports.https}"],
        **{s.name: [f"{host}:{s.https}"] for s in topology.consul_servers},
    }
    assert (job["scheme"], job["tls_config"]) == ("https", {"ca_file": "/ca.pem"})


def test_every_agent_encrypts_gossip_and_speaks_tls_to_the_others_with_both_ends_checked(
    topology: Topology,
) -> None:
    native = NativePlacement.of(topology)
    configs = [
        consul.server_config(topology, native, s, Path("/d"), CERTS)
        for s in topology.consul_servers
    ]
    configs.append(consul.agent_config(topology, native, Path("/d"), CERTS))
    for config in configs:
        assert "encrypt" not in config  # the key is in a config file of its own, owner-only
        assert config["encrypt_verify_incoming"] is config["encrypt_verify_outgoing"] is True
        tls = config["tls"]
        assert tls["defaults"]["verify_outgoing"] is True
        assert tls["defaults"]["ca_file"] == str(CERTS.ca_cert)
        assert tls["internal_rpc"] == {"verify_incoming": True, "verify_server_hostname": True}


def test_every_agent_serves_its_api_over_https_only_and_takes_the_token_as_the_credential(
    topology: Topology,
) -> None:
    native = NativePlacement.of(topology)
    agent = consul.agent_config(topology, native, Path("/d"), CERTS)
    servers = [
        consul.server_config(topology, native, s, Path("/d"), CERTS)
        for s in topology.consul_servers
    ]
    assert agent["ports"]["https"] == topology.consul_ports.https
    assert [c["ports"]["https"] for c in servers] == [s.https for s in topology.consul_servers]
    for config in [agent, *servers]:
        assert config["ports"]["http"] == -1
        assert config["tls"]["defaults"]["cert_file"] == str(CERTS.cert)
        assert config["tls"]["https"] == {"verify_incoming": False}
        assert config["acl"]["default_policy"] == "deny"


def test_servers_certificates_carry_the_name_agents_check_and_the_client_agents_its_own(
    topology: Topology,
) -> None:
    native = NativePlacement.of(topology)
    names = consul.agent_names(topology, native)
    for server in topology.consul_servers:
        assert names[server.name] == (
            [f"server.{topology.datacenter}.consul", "localhost"],
            [native.address(server.name)],
        )
    assert names["consul"][0][0] == f"client.{topology.datacenter}.consul"


def test_in_compose_each_agents_certificate_has_the_name_its_https_clients_reach_it_by(
    topology: Topology,
) -> None:
    compose = ComposePlacement.of(topology)
    names = consul.agent_names(topology, compose)
    for agent in [CONSUL, *(s.name for s in topology.consul_servers)]:
        dns, addresses = names[agent]
        assert {agent, "localhost"} <= set(dns)
        assert addresses == [compose.address(agent), "127.0.0.1"]
