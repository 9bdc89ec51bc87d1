"""Consul's ACLs: every agent denies what no token allows, and each holder of a token gets a
policy that allows what it does and no more (docs/security.md, "Consul ACLs").

Who holds which token, and the rules of each, from the topology: pure data, made into policies
and tokens by the runtime (mesh/runtime/consul_acl.py) once the servers have a leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.components import patroni
from mesh.components.consul import agent_node
from mesh.placement import Placement
from mesh.topology import Topology

# Consul's own bootstrap token: only the runtime's setting up of policies and tokens uses it.
MANAGEMENT = "management"
# `mesh consul`, `mesh fault`, `mesh status`, the config entries, the runtime's own calls, tests.
OPERATOR = "operator"
PATRONI = "patroni"
# Prometheus's scrape of the agents' metrics and its discovery of targets in the catalog.
PROMETHEUS = "prometheus"
EDGE_SERVICE = "edge"
WEB_SERVICE = "web"
FAULT_KEY = "shopmesh/faults/{service}"
POLICY_PREFIX = "shopmesh-"

OPERATOR_RULES = """\
operator = "write"
mesh = "write"
agent_prefix "" { policy = "write" }
node_prefix "" { policy = "write" }
service_prefix "" {
  policy = "write"
  intentions = "write"
}
key_prefix "" { policy = "write" }
session_prefix "" { policy = "write" }
"""

PROMETHEUS_RULES = """\
agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
"""


@dataclass(frozen=True)
class TokenSpec:
    """One token: its name (its file's, under the state dir's secrets), what it is for, its own
    policy's rules if it has one, and the identities Consul templates a policy for."""

    name: str
    description: str
    rules: str | None = None
    service_identities: tuple[str, ...] = ()
    node_identities: tuple[str, ...] = ()

    @property
    def policy(self) -> str | None:
        return f"{POLICY_PREFIX}{self.name}" if self.rules is not None else None


def agent_token(agent: str) -> str:
    return f"agent-{agent}"


def service_token(service: str) -> str:
    return f"service-{service}"


def fault_key_rules(service: str) -> str:
    """What a service reads besides its identity's: its own fault flags
    (services/common/faults.py)."""
    return f'key "{FAULT_KEY.format(service=service)}" {{ policy = "read" }}\n'


def service_rules(service: str) -> str:
    """A service's own rules: its fault flags; web's admin view also sets and clears every
    service's (it checks the caller's admin role first, services/web/api.py)."""
    if service == WEB_SERVICE:
        return f'key_prefix "{FAULT_KEY.format(service="")}" {{ policy = "write" }}\n'
    return fault_key_rules(service)


def patroni_rules(agent_nodes: list[str]) -> str:
    """Patroni's DCS: its keys (Patroni's default namespace `service/`), its sessions, which it
    creates on its client agent's node, and that agent's settings (the shortest session TTL,
    read when Consul refuses Patroni's)."""
    return f'key_prefix "service/{patroni.SCOPE}/" {{ policy = "write" }}\n' + "".join(
        f'session "{node}" {{ policy = "write" }}\nagent "{node}" {{ policy = "read" }}\n'
        for node in agent_nodes
    )


def agent_nodes(topology: Topology, placement: Placement) -> dict[str, str]:
    """Each agent's name (its process, its token) and its node name in the catalog."""
    servers = {server.name: server.name for server in topology.consul_servers}
    return servers | {agent: agent_node(agent) for agent in placement.consul_agents()}


def tokens(topology: Topology, placement: Placement) -> list[TokenSpec]:
    """Every token but the management one, which Consul makes itself (initial_management)."""
    specs = [
        TokenSpec(
            agent_token(agent),
            f"the agent {agent}: its node {node} (node identity)",
            node_identities=(node,),
        )
        for agent, node in agent_nodes(topology, placement).items()
    ]
    specs += [
        TokenSpec(
            service_token(service.name),
            f"{service.name}: registers its instances and their sidecars, reads its fault flags",
            rules=service_rules(service.name),
            service_identities=(service.name,),
        )
        for service in topology.services
    ]
    specs += [
        TokenSpec(
            service_token(EDGE_SERVICE),
            "the edge: its registrations (made by the runtime) and its sidecars' xDS",
            service_identities=(EDGE_SERVICE,),
        ),
        TokenSpec(
            PATRONI,
            "Patroni: its DCS keys and sessions",
            rules=patroni_rules([agent_node(agent) for agent in placement.consul_agents()]),
        ),
        TokenSpec(PROMETHEUS, "Prometheus: agents' metrics, catalog reads", rules=PROMETHEUS_RULES),
        TokenSpec(OPERATOR, "operators and the runtime: all but ACL admin", rules=OPERATOR_RULES),
    ]
    return specs


def agent_tokens_config(agent_token_secret: str, management: str | None) -> dict[str, Any]:
    """An agent's secret config: its own token; a server's also the management token, which
    the leader creates when it first sets up ACLs."""
    tokens: dict[str, str] = {"agent": agent_token_secret}
    if management is not None:
        tokens["initial_management"] = management
    return {"acl": {"tokens": tokens}}
