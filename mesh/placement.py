"""Where the topology runs. The topology (mesh/topology.yaml) says *what* runs: components,
instances, ports, upstreams. A placement says *where*: which address each component's process
binds, and at which address or name the others reach it. Every generator of the mesh's configs
takes (topology, placement), so one topology runs in several ways without rewriting anything:

- `NativePlacement` (`mesh up`): everything on one host, every listener on the topology's
  `bind_host`, and everything reached there.
- `ComposePlacement` (compose.yaml): a container per component on one bridge network; processes
  bind all of their container's interfaces, and are reached by their compose name, or by their
  fixed address where a name will not do.
- `HostsPlacement` (`mesh net`, docs/hosts.md): several hosts, each a network namespace with an
  address of its own; the topology spread over them so that no host's loss takes all of anything.
- `KubernetesPlacement` (the Helm chart, docs/kubernetes.md): pods without fixed addresses,
  every shared component reached by the name of its Kubernetes Service.

Components are named as the topology names them: `consul` (this host's Consul agent, a client
agent), each Consul server (`consul-server-1`), `postgres`, `jaeger`, `prometheus`, `redis`,
`ratelimit`, `watchdog`, `balancer`, each Kafka node (`kafka-1`), each service instance
(`orders-1`) and worker (`payments-worker-1`), and each edge by its id (`edge-1`). A Connect
sidecar runs where its instance runs (it shares its network namespace): it is placed as its
instance.

docs/architecture.md ("Placement") says how a placement of several hosts would be added.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.topology import ConsulServer, Host, Hosts, Topology

# Where an app reaches its own sidecar's upstream listeners, in every placement: the sidecar
# shares the app's network namespace (services call `127.0.0.1:<local_bind_port>`).
LOOPBACK = "127.0.0.1"
# Every interface of a container (or host).
ANY = "0.0.0.0"

CONSUL = "consul"
POSTGRES = "postgres"
JAEGER = "jaeger"
PROMETHEUS = "prometheus"
REDIS = "redis"
RATELIMIT = "ratelimit"
WATCHDOG = "watchdog"
BALANCER = "balancer"


class PlacementError(LookupError):
    pass


class Placement(ABC):
    """Where each component binds and how the others reach it.

    Four answers per component; generators pick the one their purpose needs:
    - `listen`: the address its process binds the listeners others use.
    - `address`: its own address, an IP: what it advertises and is registered at in Consul, and
      what goes into Envoy's static clusters and bootstraps (which resolve no names).
    - `host`: how another component reaches it: a name where names resolve, else its address.
    - `admin`: where it binds what only its supervisor (or its own health check) calls, such as
      a sidecar's Envoy admin API.
    """

    @abstractmethod
    def listen(self, component: str) -> str: ...

    @abstractmethod
    def address(self, component: str) -> str: ...

    @abstractmethod
    def host(self, component: str) -> str: ...

    @abstractmethod
    def admin(self, component: str) -> str: ...

    @abstractmethod
    def public(self) -> str:
        """Where clients outside the mesh reach what is published (the edge, the UIs): the
        edge's certificate and the tokens' issuer name it."""

    def runs(self, component: str) -> bool:
        """Whether the component runs at all in this placement."""
        return True

    # -- what follows from the answers above --------------------------------------------------

    def consul_agent(self, component: str) -> str:
        """The Consul agent of the host `component` runs on: the client agent it registers
        with, its sidecar gets xDS from, and its watchers ask. One per host; the servers are
        apart from it and reached only through it."""
        return CONSUL

    def consul_agents(self) -> list[str]:
        """Every client agent: one per host."""
        return [CONSUL]

    def consul_agent_address(self, component: str) -> str:
        """The address of `component`'s agent as a static address in its sidecar's bootstrap
        (Envoy resolves no names there)."""
        return self.address(self.consul_agent(component))

    def reaches(self, client: str, component: str) -> bool:
        """Whether `client` reaches `component`'s listeners (at `host(component)`)."""
        return True

    def clients_of(self, component: str) -> str:
        """The network `component`'s clients come from, as its address rules (pg_hba) trust
        it: one host's own address, or the hosts' subnet."""
        return f"{self.address(component)}/32"

    def consul_http_addr(self, topology: Topology, component: str = CONSUL) -> str:
        """The HTTP API of `component`'s Consul agent (HTTPS only), as that component reaches
        it: what CONSUL_HTTP_ADDR holds."""
        agent = self.consul_agent(component)
        return f"https://{self.consul_api_host(agent)}:{topology.consul_ports.https}"

    def consul_server_addr(self, server: ConsulServer) -> str:
        """A Consul server's own HTTP API (HTTPS only): its status, metrics, and the ACL
        bootstrap."""
        return f"https://{self.consul_api_host(server.name)}:{server.https}"

    def consul_api_host(self, agent: str) -> str:
        """Where a Consul agent's HTTPS API is reached (by what may reach it)."""
        return self.host(agent)

    def kafka_bootstrap(self, topology: Topology) -> str:
        return ",".join(f"{self.host(n.name)}:{n.port}" for n in topology.kafka.nodes)

    def postgres_endpoints(self, topology: Topology) -> list[str]:
        """`host:port` of every Postgres node, in the topology's order."""
        return [f"{self.host(n.name)}:{n.port}" for n in topology.postgres_nodes]

    def otlp_endpoint(self, topology: Topology) -> str:
        """Jaeger's OTLP gRPC receiver, as OTEL_EXPORTER_OTLP_ENDPOINT wants it; by address,
        since the same endpoint goes into every Envoy's static OTLP cluster."""
        return f"http://{self.address(JAEGER)}:{topology.jaeger.ports.otlp_grpc}"


@dataclass(frozen=True)
class NativePlacement(Placement):
    """One host: every component binds `bind_host` and is reached there (`mesh up`)."""

    bind_host: str

    @classmethod
    def of(cls, topology: Topology) -> NativePlacement:
        return cls(topology.bind_host)

    def listen(self, component: str) -> str:
        return self.bind_host

    def address(self, component: str) -> str:
        return self.bind_host

    def host(self, component: str) -> str:
        return self.bind_host

    def admin(self, component: str) -> str:
        return self.bind_host

    def public(self) -> str:
        return self.bind_host


# compose's bridge network. Containers without a fixed address get theirs from the upper half,
# so never a fixed one.
COMPOSE_SUBNET = IPv4Network("172.28.0.0/24")
COMPOSE_DYNAMIC_RANGE = IPv4Network("172.28.0.128/25")


@dataclass(frozen=True)
class ComposePlacement(Placement):
    """A container per component on one bridge network (compose.yaml).

    Processes bind every interface of their container. Those whose address is registered in
    Consul or handed to Envoy (Consul, the edges, Jaeger, each service instance, the rate-limit
    service), and the Consul servers (which advertise theirs), have a fixed one, in the
    topology's order. A component whose compose service is named after it is reached by that
    name (compose's DNS); the edges, whose addresses go into Consul and the balancer's config,
    are reached by their addresses. Admin APIs are on the container's loopback, for its own
    health check. Published ports are on `published_on` of the machine running compose. The
    native watchdog does not run: compose restarts containers by their restart policies.
    """

    addresses: Mapping[str, str]
    names: frozenset[str]
    published_on: str

    @classmethod
    def of(cls, topology: Topology) -> ComposePlacement:
        hosts = iter(COMPOSE_SUBNET.hosts())
        next(hosts)  # the bridge's gateway
        first_edge, *more_edges = topology.edge.instances
        addresses = {CONSUL: str(next(hosts))}
        addresses[first_edge.id] = str(next(hosts))
        addresses[JAEGER] = str(next(hosts))
        addresses |= {i.id: str(next(hosts)) for i in topology.instances()}
        addresses[RATELIMIT] = str(next(hosts))
        addresses |= {s.name: str(next(hosts)) for s in topology.consul_servers}
        # After the others, so that a second edge moved no address the first one had.
        addresses |= {edge.id: str(next(hosts)) for edge in more_edges}
        names = {CONSUL, POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, BALANCER}
        names |= {s.name for s in topology.consul_servers}
        names |= {n.name for n in topology.kafka.nodes}
        names |= {i.id for i in topology.instances()}
        names |= {name for workers in topology.workers for name in workers.instances}
        return cls(addresses, frozenset(names), published_on=topology.bind_host)

    def listen(self, component: str) -> str:
        return ANY

    def address(self, component: str) -> str:
        try:
            return self.addresses[component]
        except KeyError:
            raise PlacementError(f"{component} has no fixed address in compose") from None

    def host(self, component: str) -> str:
        return component if component in self.names else self.address(component)

    def admin(self, component: str) -> str:
        return LOOPBACK

    def public(self) -> str:
        return self.published_on

    def runs(self, component: str) -> bool:
        return component != WATCHDOG

    def postgres_endpoints(self, topology: Topology) -> list[str]:
        """Compose runs one Postgres, without Patroni (docs/runtime.md)."""
        return one_postgres(self, topology)


def one_postgres(placement: Placement, topology: Topology) -> list[str]:
    """The endpoint of the one Postgres of a placement that runs no Patroni pair."""
    return [f"{placement.host(POSTGRES)}:{topology.postgres_port}"]


# The components shared by the mesh that a placement may leave out (Consul and the Kafka nodes
# it may not: Kafka in another form, as Strimzi's brokers).
SHARED = frozenset({POSTGRES, JAEGER, PROMETHEUS, REDIS, RATELIMIT, WATCHDOG, BALANCER})

# consul-k8s installed as the release `consul` in the chart's namespace (docs/kubernetes.md):
# its servers' Service, their HTTPS API on consul-k8s's port. Pods run no client agent
# (consul-dataplane): what the services ask Consul, they ask the servers.
CONSUL_K8S_SERVER = "consul-server"
CONSUL_K8S_HTTPS_PORT = 8501


@dataclass(frozen=True)
class KubernetesPlacement(Placement):
    """The Helm chart's pods (deploy/helm/shopmesh). Pods have no fixed address: a component
    others reach is reached by the name of its Service, which is its address too (the Envoys
    resolve it: a cluster of a name is STRICT_DNS). Processes bind every interface of their pod
    (the NetworkPolicies let in only the Connect listener); admin APIs are on the pod's
    loopback. Consul is consul-k8s's servers' Service, Kafka Strimzi's bootstrap Service of
    `kafka_cluster`, the edge's public name `public_host` (a value of the chart). Only the
    components that have a Service in the chart run (`services`); Kubernetes restarts pods and
    the edge's LoadBalancer Service is the balancer.
    """

    public_host: str
    kafka_cluster: str
    # The shared components the chart runs, each behind a Service of its name.
    services: frozenset[str]

    def listen(self, component: str) -> str:
        return ANY

    def address(self, component: str) -> str:
        return self.host(component)

    def host(self, component: str) -> str:
        if component == CONSUL:
            return CONSUL_K8S_SERVER
        if component not in self.services:
            raise PlacementError(f"{component} has no Service in the chart")
        return component

    def admin(self, component: str) -> str:
        return LOOPBACK

    def public(self) -> str:
        return self.public_host

    def runs(self, component: str) -> bool:
        return component not in SHARED or component in self.services

    def consul_http_addr(self, topology: Topology, component: str = CONSUL) -> str:
        return f"https://{CONSUL_K8S_SERVER}:{CONSUL_K8S_HTTPS_PORT}"

    def kafka_bootstrap(self, topology: Topology) -> str:
        return f"{self.kafka_cluster}-kafka-bootstrap:{topology.kafka.nodes[0].port}"

    def postgres_endpoints(self, topology: Topology) -> list[str]:
        return one_postgres(self, topology)


def consul_agent_on(host: str) -> str:
    """The name of a host's Consul client agent in the hosts placement."""
    return f"{CONSUL}-agent-{host}"


@dataclass(frozen=True)
class HostsPlacement(Placement):
    """Several hosts, each a network namespace with its own address on one bridge (the
    topology's `hosts`, made by `mesh net up`). Every process binds its host's address and is
    reached there; admin APIs are on its host's loopback, so only that host reaches them; clients
    come in through the balancer, alone on its host.

    Each host runs a Consul client agent of its own (`consul-agent-<host>`), which everything on
    it registers with and its sidecars get xDS from; there is no one `consul` agent. Every Consul
    agent, servers too, listens with its HTTPS API (and the client agents with their gRPC, xDS)
    on its host's loopback only: only its own host reaches it, its sidecars and services at
    `127.0.0.1`; gossip and RPC between agents go over the hosts' addresses. The rest is
    spread over the app hosts in groups whose members must not share a host (the Consul servers,
    the Kafka nodes, the Postgres nodes, the instances of each service, of each worker, the
    edges), and one-member groups for the rest; members go to consecutive hosts, starting where
    the group before ended, so the load evens out too. A group larger than the hosts is refused.
    """

    hosts: Hosts
    on: Mapping[str, str]
    # The Consul agents, whose HTTPS APIs are on their hosts' loopback.
    loopback_only: frozenset[str] = frozenset()

    @classmethod
    def of(cls, topology: Topology) -> HostsPlacement:
        hosts = topology.hosts
        apps = [host.name for host in hosts.apps]
        on = {consul_agent_on(host.name): host.name for host in hosts.all}
        agents = {*on, *(server.name for server in topology.consul_servers)}
        on[BALANCER] = hosts.balancer.name
        cursor = 0
        for group in _kept_apart(topology):
            if len(group) > len(apps):
                raise PlacementError(
                    f"{', '.join(group)} must each have a host of their own, and there are "
                    f"{len(apps)} app hosts in the topology's hosts"
                )
            for offset, component in enumerate(group):
                on[component] = apps[(cursor + offset) % len(apps)]
            cursor += len(group)
        return cls(hosts, on, frozenset(agents))

    def host_of(self, component: str) -> Host:
        try:
            return self.hosts.host(self.on[component])
        except KeyError:
            if component == CONSUL:
                raise PlacementError(
                    f"the hosts placement has no one {CONSUL} agent: each host has its own, "
                    f"{consul_agent_on('<host>')}"
                ) from None
            raise PlacementError(f"{component} is placed on no host") from None

    def components_on(self, host: str) -> list[str]:
        return [component for component, name in self.on.items() if name == host]

    def listen(self, component: str) -> str:
        address = self.host_of(component).address
        return LOOPBACK if component in self.loopback_only else address

    def address(self, component: str) -> str:
        return self.host_of(component).address

    def host(self, component: str) -> str:
        return self.host_of(component).address

    def consul_api_host(self, agent: str) -> str:
        return self.listen(agent)

    def admin(self, component: str) -> str:
        self.host_of(component)
        return LOOPBACK

    def public(self) -> str:
        return self.hosts.balancer.address

    def consul_agent(self, component: str) -> str:
        return consul_agent_on(self.host_of(component).name)

    def consul_agents(self) -> list[str]:
        return [consul_agent_on(host.name) for host in self.hosts.all]

    def consul_agent_address(self, component: str) -> str:
        self.host_of(component)
        return LOOPBACK

    def clients_of(self, component: str) -> str:
        self.host_of(component)
        return str(self.hosts.subnet)

    def reaches(self, client: str, component: str) -> bool:
        local = self.host_of(client) == self.host_of(component)
        return local or component not in self.loopback_only


def _kept_apart(topology: Topology) -> list[list[str]]:
    """Groups of components that must not share a host, in the order they are placed."""
    groups = [
        [server.name for server in topology.consul_servers],
        [node.name for node in topology.kafka.nodes],
        [node.name for node in topology.postgres_nodes],
    ]
    groups += [[i.id for i in service.instances] for service in topology.services]
    groups += [list(workers.instances) for workers in topology.workers]
    groups.append([edge.id for edge in topology.edge.instances])
    groups += [[single] for single in (JAEGER, PROMETHEUS, REDIS, RATELIMIT, WATCHDOG)]
    return groups
