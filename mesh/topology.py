"""Typed view of mesh/topology.yaml, the single source of ports, names and upstreams: what runs.
Where it runs is a placement's (mesh/placement.py); `bind_host` is the one host of the native
placement (`mesh up`), where compose also publishes its ports."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from ipaddress import IPv4Network
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

from mesh.placement import NativePlacement

TOPOLOGY_FILE = Path(__file__).with_name("topology.yaml")


class TopologyError(ValueError):
    pass


@dataclass(frozen=True)
class Sidecar:
    port: int
    # Envoy's Prometheus listener (Proxy.Config envoy_prometheus_bind_addr): /metrics.
    metrics_port: int


@dataclass(frozen=True)
class Upstream:
    service: str
    local_bind_port: int


@dataclass(frozen=True)
class Instance:
    id: str
    service: str
    port: int
    sidecar: Sidecar
    metrics_port: int


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    protocol: str
    database: str | None
    upstreams: tuple[Upstream, ...]
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    timeout_ms: int
    # "jwt": a valid external token is required (and exchanged by auth); "none": public.
    auth: str = "jwt"
    # REST JSON <-> gRPC through Envoy's grpc_json_transcoder (the service speaks gRPC).
    transcode: bool = False
    websocket: bool = False


# The windows the edge's rate-limit service (envoyproxy/ratelimit) counts in: fixed windows,
# aligned to the clock (a minute's budget starts afresh at every full minute).
RATE_LIMIT_UNITS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_seconds: int

    @property
    def unit(self) -> str:
        return RATE_LIMIT_UNITS[self.per_seconds]


@dataclass(frozen=True)
class EdgeInstance:
    """One edge Envoy: its TCP listeners behind the balancer, its listener of /ready and
    /metrics, its sidecar and that sidecar's upstream listeners (each edge has its own, since
    all share one host)."""

    id: str
    http_port: int
    https_port: int
    metrics_port: int
    sidecar: Sidecar
    upstreams: tuple[Upstream, ...]


@dataclass(frozen=True)
class Edge:
    # The public ports: TCP ones are the balancer's; HTTP/3's UDP one every edge binds.
    http_port: int
    https_port: int
    instances: tuple[EdgeInstance, ...]
    routes: tuple[Route, ...]
    per_user_limit: RateLimit
    per_ip_limit: RateLimit
    token_cache: TokenCache
    workers: int
    admission: Admission
    # How long the edge's jwt_authn keeps auth's JWKS before fetching it again (an unknown kid
    # does not make it fetch sooner). auth publishes a new signing key longer than this before
    # signing with it (services/auth/README.md#signing-keys-and-rotation).
    jwks_cache_s: int = 60
    # The heap each edge process may hold before its overload manager steps in
    # (mesh/envoy_memory.py).
    max_heap_mb: int = 256

    @property
    def services(self) -> tuple[str, ...]:
        """The services the edge routes to: every instance's sidecar has an upstream for each."""
        return tuple(u.service for u in self.instances[0].upstreams)

    def instance(self, edge_id: str) -> EdgeInstance:
        for instance in self.instances:
            if instance.id == edge_id:
                return instance
        raise KeyError(edge_id)


@dataclass(frozen=True)
class TokenCache:
    """How the edge keeps auth's token exchanges (mesh/runtime/token_exchange.lua)."""

    max_age_s: int
    max_entries: int
    # How often each edge worker asks auth which users were blocked lately.
    blocks_every_s: int


@dataclass(frozen=True)
class Admission:
    """How many requests an edge lets in at once (Envoy's adaptive concurrency filter, first in
    its chain): the limit follows the median latency of what it let in, and shrinks while that is
    over `latency_ms`, down to `min_concurrency`; past the limit a request gets a 503 at once."""

    latency_ms: int
    min_concurrency: int


@dataclass(frozen=True)
class LoginLimits:
    """auth's brute-force limit on the password grant (services/auth/README.md): at most
    `per_user` failed logins of one username and `per_address` from one client address within
    `window_s` of the first; over either, 429 until the window ends. The defaults are auth's own
    (services.auth.config.LoginLimitSettings)."""

    window_s: int = 900
    per_user: int = 10
    per_address: int = 100


@dataclass(frozen=True)
class ConsulPorts:
    """The ports of this host's Consul agent (a client agent)."""

    # Its HTTP API, served over TLS only.
    https: int
    grpc: int
    serf_lan: int


@dataclass(frozen=True)
class ConsulServer:
    id: int
    # Raft and the agents' RPC.
    server: int
    serf_lan: int
    # Its own HTTP API, over TLS only: status, and its metrics for Prometheus.
    https: int

    @property
    def name(self) -> str:
        return f"consul-server-{self.id}"


@dataclass(frozen=True)
class JaegerPorts:
    otlp_grpc: int
    otlp_http: int
    # The query HTTP API and the UI.
    ui: int
    query_grpc: int
    health: int
    health_grpc: int
    # Jaeger's own Prometheus metrics.
    metrics: int


@dataclass(frozen=True)
class Jaeger:
    max_traces: int
    ports: JaegerPorts


@dataclass(frozen=True)
class RateLimitServicePorts:
    # ShouldRateLimit, what the edge calls.
    grpc: int
    # /healthcheck and the /json form of ShouldRateLimit.
    http: int
    # pprof and /stats.
    debug: int
    # Its own Prometheus metrics.
    metrics: int


@dataclass(frozen=True)
class KafkaNode:
    id: int
    port: int
    controller_port: int
    # The Prometheus JMX exporter java agent's /metrics.
    metrics_port: int

    @property
    def name(self) -> str:
        return f"kafka-{self.id}"


@dataclass(frozen=True)
class PostgresNode:
    id: int
    port: int
    # Patroni's REST API: the node's role and health.
    patroni_port: int

    @property
    def name(self) -> str:
        return f"postgres-{self.id}"


@dataclass(frozen=True)
class Kafka:
    heap: str
    # "generate" (made once, kept in the state dir) or a fixed base64url cluster id.
    cluster_id: str
    nodes: tuple[KafkaNode, ...]


@dataclass(frozen=True)
class Workers:
    """Processes that serve nothing and call no upstream (so no port and no sidecar): they
    consume from Kafka and work on their service's database."""

    name: str
    module: str
    database: str
    group: str
    instances: tuple[str, ...]
    # Where each instance serves /metrics, in the order of `instances`.
    metrics_ports: tuple[int, ...] = ()

    def metrics_port(self, instance: str) -> int:
        return self.metrics_ports[self.instances.index(instance)]


# A host's name: a DNS label short enough that the link names made of it (a short prefix, a dash
# and the name) keep within Linux's 15 characters.
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,9}")


@dataclass(frozen=True)
class Host:
    name: str
    address: str


@dataclass(frozen=True)
class Hosts:
    """The hosts of the hosts placement (`mesh net`, docs/hosts.md): network namespaces on one
    bridge. The bridge (`gateway`, the root namespace's address on it) takes the subnet's first
    address and the hosts the next ones, `apps` in order, then `balancer`: each address follows
    from the subnet and the order, and is written nowhere."""

    subnet: IPv4Network
    gateway: str
    apps: tuple[Host, ...]
    balancer: Host

    @classmethod
    def on(cls, subnet: IPv4Network, apps: tuple[str, ...], balancer: str) -> Hosts:
        names = (*apps, balancer)
        bad = [name for name in names if not HOST_NAME.fullmatch(name)]
        if bad:
            raise TopologyError(
                f"hosts: names must be lower-case letters, digits and dashes, at most 10, "
                f"starting with a letter; not {bad}"
            )
        if len(set(names)) != len(names):
            raise TopologyError(f"hosts: every host needs a name of its own, got {list(names)}")
        if not apps:
            raise TopologyError("hosts: at least one host in apps")
        gateway, *addresses = islice(subnet.hosts(), len(names) + 1)
        if len(addresses) < len(names):
            raise TopologyError(f"hosts: {subnet} has too few addresses for {len(names)} hosts")
        hosts = [Host(name, str(address)) for name, address in zip(names, addresses, strict=True)]
        return cls(subnet, str(gateway), tuple(hosts[:-1]), hosts[-1])

    @property
    def all(self) -> tuple[Host, ...]:
        return (*self.apps, self.balancer)

    def host(self, name: str) -> Host:
        for host in self.all:
            if host.name == name:
                return host
        raise KeyError(name)


@dataclass(frozen=True)
class Topology:
    bind_host: str
    datacenter: str
    consul_ports: ConsulPorts
    postgres_port: int
    prometheus_port: int
    services: tuple[Service, ...]
    edge: Edge
    kafka: Kafka
    jaeger: Jaeger
    redis_port: int
    ratelimit_ports: RateLimitServicePorts
    watchdog_port: int
    # The balancer's (HAProxy's) stats page and Prometheus metrics.
    balancer_stats_port: int
    hosts: Hosts
    # The share of requests without a trace context the edge starts a trace for.
    trace_sample_percent: float = 100.0
    workers: tuple[Workers, ...] = ()
    consul_servers: tuple[ConsulServer, ...] = ()
    # The Patroni cluster natively; `postgres_port` is the first node's (compose's one Postgres).
    postgres_nodes: tuple[PostgresNode, ...] = ()
    login_limits: LoginLimits = LoginLimits()

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    # Where this host reaches the native mesh (`mesh up`): for the host's tools and the tests.
    # Generators ask the placement they are given instead.

    @property
    def consul_http_addr(self) -> str:
        return NativePlacement.of(self).consul_http_addr(self)

    def otlp_endpoint(self) -> str:
        """Jaeger's OTLP gRPC receiver, as OTEL_EXPORTER_OTLP_ENDPOINT wants it."""
        return NativePlacement.of(self).otlp_endpoint(self)

    def kafka_bootstrap(self) -> str:
        return NativePlacement.of(self).kafka_bootstrap(self)

    def instances(self) -> tuple[Instance, ...]:
        return tuple(i for s in self.services for i in s.instances)

    def small(self) -> Topology:
        """The same mesh with one of everything that the full one runs several of, for small
        machines (`mesh up --small`): the first instance of each service, worker, edge,
        Consul server and Postgres node, with their ports. Kafka keeps its three nodes: the
        topics are replicated three times, and acknowledged writes need two in sync."""
        return replace(
            self,
            services=tuple(replace(s, instances=s.instances[:1]) for s in self.services),
            workers=tuple(
                replace(w, instances=w.instances[:1], metrics_ports=w.metrics_ports[:1])
                for w in self.workers
            ),
            edge=replace(self.edge, instances=self.edge.instances[:1]),
            consul_servers=self.consul_servers[:1],
            postgres_nodes=self.postgres_nodes[:1],
        )

    def all_ports(self) -> dict[str, int]:
        """Every TCP port the runtime binds, keyed by a readable owner name."""
        ports = {f"consul {k}": v for k, v in vars(self.consul_ports).items()}
        for server in self.consul_servers:
            ports.update({f"{server.name} {k}": v for k, v in vars(server).items() if k != "id"})
        for pg in self.postgres_nodes:
            ports[pg.name] = pg.port
            ports[f"{pg.name} patroni"] = pg.patroni_port
        ports["prometheus"] = self.prometheus_port
        ports.update({f"jaeger {k}": v for k, v in vars(self.jaeger.ports).items()})
        ports["redis"] = self.redis_port
        ports["watchdog metrics"] = self.watchdog_port
        ports.update({f"ratelimit {k}": v for k, v in vars(self.ratelimit_ports).items()})
        for node in self.kafka.nodes:
            ports[node.name] = node.port
            ports[f"{node.name} controller"] = node.controller_port
            ports[f"{node.name} metrics"] = node.metrics_port
        for workers in self.workers:
            for name, port in zip(workers.instances, workers.metrics_ports, strict=True):
                ports[f"{name} metrics"] = port
        for inst in self.instances():
            ports[inst.id] = inst.port
            ports[f"{inst.id} metrics"] = inst.metrics_port
            ports[f"{inst.id}-sidecar"] = inst.sidecar.port
            ports[f"{inst.id}-sidecar metrics"] = inst.sidecar.metrics_port
        for svc in self.services:
            for up in svc.upstreams:
                ports[f"{svc.name} -> {up.service} upstream"] = up.local_bind_port
        ports["edge http (balancer)"] = self.edge.http_port
        ports["edge https (balancer)"] = self.edge.https_port
        ports["balancer stats"] = self.balancer_stats_port
        for edge in self.edge.instances:
            ports[f"{edge.id} http"] = edge.http_port
            ports[f"{edge.id} https"] = edge.https_port
            ports[f"{edge.id} metrics"] = edge.metrics_port
            ports[f"{edge.id}-sidecar"] = edge.sidecar.port
            ports[f"{edge.id}-sidecar metrics"] = edge.sidecar.metrics_port
            for up in edge.upstreams:
                ports[f"{edge.id} -> {up.service} upstream"] = up.local_bind_port
        return ports


def _sidecar(raw: dict[str, Any]) -> Sidecar:
    return Sidecar(
        port=int(raw["port"]),
        metrics_port=int(raw["metrics_port"]),
    )


def parse(raw: dict[str, Any]) -> Topology:
    services = []
    for name, spec in raw["services"].items():
        services.append(
            Service(
                name=name,
                module=spec["module"],
                protocol=spec["protocol"],
                database=spec.get("database"),
                upstreams=tuple(
                    Upstream(u["service"], int(u["local_bind_port"]))
                    for u in spec.get("upstreams") or []
                ),
                instances=tuple(
                    Instance(
                        id=i["id"],
                        service=name,
                        port=int(i["port"]),
                        sidecar=_sidecar(i["sidecar"]),
                        metrics_port=int(i["metrics_port"]),
                    )
                    for i in spec["instances"]
                ),
            )
        )
    edge_raw = raw["edge"]
    limits = edge_raw["rate_limits"]
    edge = Edge(
        http_port=int(edge_raw["http_port"]),
        https_port=int(edge_raw["https_port"]),
        instances=tuple(
            EdgeInstance(
                id=i["id"],
                http_port=int(i["http_port"]),
                https_port=int(i["https_port"]),
                metrics_port=int(i["metrics_port"]),
                sidecar=_sidecar(i["sidecar"]),
                upstreams=tuple(Upstream(name, int(port)) for name, port in i["upstreams"].items()),
            )
            for i in edge_raw["instances"]
        ),
        routes=tuple(
            Route(
                prefix=r["prefix"],
                service=r["service"],
                timeout_ms=int(r.get("timeout_ms", 0)),
                auth=r.get("auth", "jwt"),
                transcode=bool(r.get("transcode", False)),
                websocket=bool(r.get("websocket", False)),
            )
            for r in edge_raw["routes"]
        ),
        per_user_limit=RateLimit(**limits["per_user"]),
        per_ip_limit=RateLimit(**limits["per_ip"]),
        token_cache=TokenCache(**{k: int(v) for k, v in edge_raw["token_cache"].items()}),
        workers=int(edge_raw["workers"]),
        admission=Admission(**{k: int(v) for k, v in edge_raw["admission"].items()}),
        jwks_cache_s=int(edge_raw.get("jwks_cache_s", 60)),
        max_heap_mb=int(edge_raw["max_heap_mb"]),
    )
    consul = raw["consul"]
    kafka_raw = raw["kafka"]
    kafka = Kafka(
        heap=str(kafka_raw["heap"]),
        cluster_id=str(kafka_raw.get("cluster_id") or "generate"),
        nodes=tuple(
            KafkaNode(
                id=int(n["id"]),
                port=int(n["port"]),
                controller_port=int(n["controller_port"]),
                metrics_port=int(n["metrics_port"]),
            )
            for n in kafka_raw["nodes"]
        ),
    )
    postgres_nodes = tuple(
        PostgresNode(id=int(n["id"]), port=int(n["port"]), patroni_port=int(n["patroni_port"]))
        for n in raw["postgres"]["nodes"]
    )
    jaeger_raw = raw["jaeger"]
    jaeger = Jaeger(
        max_traces=int(jaeger_raw["max_traces"]),
        ports=JaegerPorts(**{k: int(v) for k, v in jaeger_raw["ports"].items()}),
    )
    topology = Topology(
        bind_host=raw["bind_host"],
        datacenter=consul["datacenter"],
        consul_ports=ConsulPorts(**{k: int(v) for k, v in consul["ports"].items()}),
        postgres_port=postgres_nodes[0].port,
        prometheus_port=int(raw["prometheus"]["port"]),
        services=tuple(services),
        edge=edge,
        kafka=kafka,
        jaeger=jaeger,
        redis_port=int(raw["redis"]["port"]),
        watchdog_port=int(raw["watchdog"]["metrics_port"]),
        balancer_stats_port=int(raw["balancer"]["stats_port"]),
        hosts=Hosts.on(
            IPv4Network(raw["hosts"]["subnet"]),
            tuple(raw["hosts"]["apps"]),
            raw["hosts"]["balancer"],
        ),
        trace_sample_percent=float(raw["tracing"]["sample_percent"]),
        ratelimit_ports=RateLimitServicePorts(
            **{k: int(v) for k, v in raw["ratelimit"]["ports"].items()}
        ),
        consul_servers=tuple(
            ConsulServer(**{k: int(v) for k, v in server.items()}) for server in consul["servers"]
        ),
        workers=tuple(
            Workers(
                name=name,
                module=spec["module"],
                database=spec["database"],
                group=spec["group"],
                instances=tuple(spec["instances"]),
                metrics_ports=tuple(int(p) for p in spec["metrics_ports"]),
            )
            for name, spec in (raw.get("workers") or {}).items()
        ),
        postgres_nodes=postgres_nodes,
        login_limits=LoginLimits(
            **{k: int(v) for k, v in ((raw.get("auth") or {}).get("login_limits") or {}).items()}
        ),
    )
    validate(topology)
    return topology


def validate(topology: Topology) -> None:
    databases = {s.database for s in topology.services if s.database}
    for workers in topology.workers:
        if workers.database not in databases:
            raise TopologyError(f"workers {workers.name} use unknown database {workers.database!r}")
        if len(workers.metrics_ports) != len(workers.instances):
            raise TopologyError(f"workers {workers.name}: one metrics port per instance")
    ports = topology.all_ports()
    owners: dict[int, str] = {}
    for owner, port in ports.items():
        if port in owners:
            raise TopologyError(f"port {port} is given to both {owners[port]!r} and {owner!r}")
        owners[port] = owner
    _validate_kafka(topology.kafka)
    _validate_consul_servers(topology.consul_servers)
    names = {s.name for s in topology.services}
    for svc in topology.services:
        for up in svc.upstreams:
            if up.service not in names:
                raise TopologyError(f"{svc.name} has an upstream to unknown service {up.service!r}")
    for name, limit in (
        ("per_user", topology.edge.per_user_limit),
        ("per_ip", topology.edge.per_ip_limit),
    ):
        if limit.per_seconds not in RATE_LIMIT_UNITS:
            raise TopologyError(
                f"edge rate_limits.{name}: per_seconds must be one of "
                f"{sorted(RATE_LIMIT_UNITS)}, the windows the rate-limit service counts in"
            )
    _validate_edge(topology.edge)
    limits = topology.login_limits
    if min(limits.window_s, limits.per_user, limits.per_address) < 1:
        raise TopologyError("auth login_limits: window_s, per_user and per_address must be >= 1")
    if topology.edge.jwks_cache_s < 1:
        raise TopologyError("edge jwks_cache_s must be >= 1")
    if topology.edge.max_heap_mb < 1:
        raise TopologyError("edge max_heap_mb must be >= 1")
    if topology.edge.admission.latency_ms < 1 or topology.edge.admission.min_concurrency < 1:
        raise TopologyError("edge admission: latency_ms and min_concurrency must be >= 1")
    edge_upstreams = set(topology.edge.services)
    for route in topology.edge.routes:
        if route.service not in names:
            raise TopologyError(f"edge route {route.prefix} points at unknown {route.service!r}")
        if route.service not in edge_upstreams:
            raise TopologyError(f"edge route {route.prefix}: {route.service} is no edge upstream")
        if route.auth not in ("jwt", "none"):
            raise TopologyError(f"edge route {route.prefix}: auth must be jwt or none")


def _validate_edge(edge: Edge) -> None:
    if not edge.instances:
        raise TopologyError("edge needs at least one instance")
    for instance in edge.instances:
        if set(u.service for u in instance.upstreams) != set(edge.services):
            raise TopologyError(
                f"edge instance {instance.id}: its upstreams must name the same services as "
                f"{edge.instances[0].id}'s, {sorted(edge.services)}"
            )


def _validate_kafka(kafka: Kafka) -> None:
    ids = [n.id for n in kafka.nodes]
    if len(kafka.nodes) < 3 or len(set(ids)) != len(ids) or min(ids) < 1:
        raise TopologyError(
            f"kafka needs at least 3 nodes with distinct positive ids (replication factor 3), "
            f"got ids {ids}"
        )
    if not re.fullmatch(r"[0-9]+[mMgG]", kafka.heap):
        raise TopologyError(f"kafka heap must look like 384m or 1g, got {kafka.heap!r}")
    if kafka.cluster_id != "generate" and not re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka.cluster_id):
        raise TopologyError(
            f"kafka cluster_id must be `generate` or a 22-character base64url id, "
            f"got {kafka.cluster_id!r}"
        )


def _validate_consul_servers(servers: tuple[ConsulServer, ...]) -> None:
    ids = [s.id for s in servers]
    if len(servers) < 3 or len(servers) % 2 == 0 or len(set(ids)) != len(ids) or min(ids) < 1:
        raise TopologyError(
            f"consul needs an odd number of servers, at least 3, with distinct positive ids "
            f"(a quorum that outlives any one), got ids {ids}"
        )


@cache
def load(path: Path = TOPOLOGY_FILE) -> Topology:
    return parse(yaml.safe_load(path.read_text()))
