"""Consul's ACLs as generated (mesh/components/consul_acl.py, mesh/runtime/consul_acl.py): who
holds which token, what each policy allows, and that no secret reaches a generated config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2
import pytest

from mesh.components import consul_acl
from mesh.components.consul import AGENT_NODE, agent_config, server_config
from mesh.components.consul_acl import (
    EDGE_SERVICE,
    MANAGEMENT,
    OPERATOR,
    PATRONI,
    PROMETHEUS,
    WEB_SERVICE,
    TokenSpec,
    agent_token,
    service_token,
)
from mesh.placement import CONSUL, NativePlacement
from mesh.runtime import consul_acl as runtime_acl
from mesh.runtime.paths import StateDir
from mesh.runtime.tls import AgentCerts
from mesh.topology import Topology, load

CERTS = AgentCerts(Path("/ca.pem"), Path("/cert.pem"), Path("/key.pem"))


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


def by_name(topology: Topology) -> dict[str, TokenSpec]:
    return {spec.name: spec for spec in consul_acl.tokens(topology, NativePlacement.of(topology))}


def rules(spec: TokenSpec) -> dict[str, Any]:
    """The policy's rules as Consul reads them (HCL), as plain data."""
    assert spec.rules is not None, spec.name
    parsed: dict[str, Any] = plain(hcl2.loads(spec.rules))
    return parsed


def plain(value: Any) -> Any:
    """python-hcl2's output without its quotes and block markers."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def test_each_service_and_the_edge_holds_its_own_identity_and_reads_only_its_own_fault_key(
    topology: Topology,
) -> None:
    specs = by_name(topology)
    for service in topology.services:
        spec = specs[service_token(service.name)]
        assert spec.service_identities == (service.name,)
        assert spec.node_identities == ()
        if service.name == WEB_SERVICE:
            # The admin view sets and clears any service's flags (for admins only).
            assert rules(spec) == {"key_prefix": [{"shopmesh/faults/": {"policy": "write"}}]}
            continue
        assert rules(spec) == {"key": [{f"shopmesh/faults/{service.name}": {"policy": "read"}}]}, (
            "its own fault flags, read only: no prefix, no write"
        )
    edge = specs[service_token(EDGE_SERVICE)]
    assert edge.service_identities == (EDGE_SERVICE,) and edge.rules is None


def test_each_agent_holds_the_node_identity_of_its_own_node_only(topology: Topology) -> None:
    specs = by_name(topology)
    nodes = {server.name: server.name for server in topology.consul_servers} | {CONSUL: AGENT_NODE}
    for agent, node in nodes.items():
        spec = specs[agent_token(agent)]
        assert spec.node_identities == (node,)
        assert spec.service_identities == () and spec.rules is None


def test_the_operator_may_do_everything_but_administer_acls(topology: Topology) -> None:
    operator = rules(by_name(topology)[OPERATOR])
    assert "acl" not in operator
    assert operator["operator"] == "write" and operator["mesh"] == "write"
    assert operator["service_prefix"] == [{"": {"policy": "write", "intentions": "write"}}]
    for kind in ("agent_prefix", "node_prefix", "key_prefix", "session_prefix"):
        assert operator[kind] == [{"": {"policy": "write"}}], kind


def test_prometheus_only_reads_agents_nodes_and_services(topology: Topology) -> None:
    prometheus = rules(by_name(topology)[PROMETHEUS])
    assert prometheus == {
        kind: [{"": {"policy": "read"}}]
        for kind in ("agent_prefix", "node_prefix", "service_prefix")
    }


def test_patroni_writes_its_dcs_keys_and_its_sessions_and_nothing_else(
    topology: Topology,
) -> None:
    patroni = rules(by_name(topology)[PATRONI])
    assert patroni == {
        "key_prefix": [{"service/shopmesh-postgres/": {"policy": "write"}}],
        "session": [{AGENT_NODE: {"policy": "write"}}],
        "agent": [{AGENT_NODE: {"policy": "read"}}],
    }


def test_no_token_but_the_management_one_has_acl_rights(topology: Topology) -> None:
    assert MANAGEMENT not in by_name(topology)
    for spec in consul_acl.tokens(topology, NativePlacement.of(topology)):
        if spec.rules is not None:
            assert "acl" not in rules(spec), spec.name


def test_every_agent_denies_by_default_and_its_generated_config_holds_no_token(
    topology: Topology,
) -> None:
    placement = NativePlacement.of(topology)
    configs = [
        server_config(topology, placement, server, Path("/d"), CERTS)
        for server in topology.consul_servers
    ] + [agent_config(topology, placement, Path("/d"), CERTS)]
    for config in configs:
        assert config["acl"] == {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": True,
        }
        assert "tokens" not in config["acl"]


def test_token_secrets_are_made_once_owner_only_and_each_agent_gets_its_own(
    topology: Topology, tmp_path: Path
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    runtime_acl.ensure_token_files(topology, NativePlacement.of(topology), state)
    names = [
        MANAGEMENT,
        *(spec.name for spec in consul_acl.tokens(topology, NativePlacement.of(topology))),
    ]
    first = {name: runtime_acl.secret(state, name) for name in names}
    assert len(set(first.values())) == len(names), "every token has a secret of its own"
    runtime_acl.ensure_token_files(topology, NativePlacement.of(topology), state)
    assert {name: runtime_acl.secret(state, name) for name in names} == first
    for name in names:
        assert runtime_acl.token_file(state, name).stat().st_mode & 0o777 == 0o600, name
    server = topology.consul_servers[0].name
    server_file = runtime_acl.write_agent_config(topology, state, server)
    assert server_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(server_file.read_text()) == {
        "acl": {
            "tokens": {
                "agent": first[agent_token(server)],
                "initial_management": first[MANAGEMENT],
            }
        }
    }
    client = json.loads(runtime_acl.write_agent_config(topology, state, CONSUL).read_text())
    assert client == {"acl": {"tokens": {"agent": first[agent_token(CONSUL)]}}}


def test_a_tokens_links_are_its_policy_and_its_identities(topology: Topology) -> None:
    specs = by_name(topology)
    orders = runtime_acl.token_body(topology, specs[service_token("orders")])
    assert orders["Policies"] == [{"Name": "shopmesh-service-orders"}]
    assert orders["ServiceIdentities"] == [{"ServiceName": "orders"}]
    assert orders["NodeIdentities"] == []
    agent = runtime_acl.token_body(topology, specs[agent_token(CONSUL)])
    assert agent["Policies"] == [] and agent["ServiceIdentities"] == []
    assert agent["NodeIdentities"] == [{"NodeName": AGENT_NODE, "Datacenter": topology.datacenter}]
    assert "SecretID" not in orders and "SecretID" not in agent
