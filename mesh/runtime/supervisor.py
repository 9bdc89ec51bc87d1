"""The native runtime: every process of the mesh, in dependency order, from the topology."""

from __future__ import annotations

import errno
import fcntl
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

from mesh.components import kafka_auth
from mesh.components.consul_acl import EDGE_SERVICE, service_token
from mesh.components.postgres import passwords
from mesh.placement import ANY, PROMETHEUS, WATCHDOG, HostsPlacement, NativePlacement, Placement
from mesh.runtime import (
    balancer,
    consul,
    consul_acl,
    demo,
    edge,
    envoy_admin,
    hosting,
    hosts,
    jaeger,
    kafka,
    netfaults,
    postgres,
    process,
    prometheus,
    protos,
    ratelimit,
    start_waves,
    watchdog,
)
from mesh.runtime.hosts import Network
from mesh.runtime.paths import REPO_ROOT, StateDir, make_private, private_files
from mesh.runtime.process import ProcessSpec
from mesh.runtime.provision import install_all
from mesh.runtime.tls import consul_ca
from mesh.topology import EdgeInstance, Instance, Topology, Workers
from mesh.wiring import Wiring, instance_env, worker_env

# The status row of the Kafka cluster as a whole (after its nodes' rows); no process of its own.
KAFKA_CLUSTER = "kafka-cluster"
# The same for the Consul servers: who leads, how many are healthy voters.
CONSUL_CLUSTER = "consul-cluster"
# `mesh kill/stop/start consul-servers`: every Consul server (the control plane).
CONSUL_SERVERS = "consul-servers"
# The same for the Postgres nodes under Patroni: who leads.
POSTGRES_CLUSTER = "postgres-cluster"
# A Connect sidecar's process is its instance's name with this suffix; it runs beside it.
SIDECAR_SUFFIX = "-sidecar"
# Processes that are no component of the topology, and the component each runs beside.
COMPANIONS = {prometheus.DISCOVERY: PROMETHEUS}

T = TypeVar("T")


class MeshError(RuntimeError):
    """A problem the user can act on; the CLI prints the message without a traceback."""


class AlreadyRunning(MeshError):
    pass


def native_wiring(
    topology: Topology, state: StateDir, placement: Placement | None = None
) -> Wiring:
    """Every process where the placement puts it (default: on this host), with the passwords
    of the state dir in its database URL."""
    return Wiring(
        placement=placement or NativePlacement.of(topology),
        database_password=lambda database: passwords(state, topology)[database],
        auth_seed_file=lambda: str(demo.ensure_seed(state)),
        consul_token_file=lambda service: str(consul_acl.token_file(state, service_token(service))),
        consul_ca_file=str(consul_ca(state)),
        kafka_password_file=lambda principal: str(kafka_password_file(state, principal)),
    )


def kafka_password_file(state: StateDir, principal: str) -> Path:
    """The principal's password file, generated if this is its first use."""
    kafka_auth.passwords(state, (principal,))
    return kafka_auth.password_file(state, principal)


def service_env(topology: Topology, state: StateDir, instance: Instance) -> dict[str, str]:
    return instance_env(topology, native_wiring(topology, state), instance)


def service_spec(
    topology: Topology, state: StateDir, wiring: Wiring, instance: Instance
) -> ProcessSpec:
    service = topology.service(instance.service)
    client = consul.operator_client(wiring.placement.consul_http_addr(topology, instance.id), state)

    def ready() -> str | None:
        try:
            health = client.agent_health(instance.id)
        except httpx.HTTPError as exc:
            return f"consul not answering ({exc.__class__.__name__})"
        return None if health == "passing" else f"consul health is {health}"

    return ProcessSpec(
        name=instance.id,
        argv=[sys.executable, "-m", service.module],
        env=instance_env(topology, wiring, instance),
        cwd=REPO_ROOT,
        ports=(instance.port, instance.metrics_port),
        ready=ready,
        stop_timeout=10,
    )


def worker_spec(
    topology: Topology, state: StateDir, wiring: Wiring, workers: Workers, instance: str
) -> ProcessSpec:
    """A consumer process: no port, no sidecar; ready once it has joined its consumer group.

    Both sides must say so: the process itself (its /metrics: a member with a current
    assignment) and the group coordinator. The coordinator alone is not enough: a killed
    worker stays listed under the same client id until its session times out."""
    host = wiring.placement.host(instance)
    metrics_url = f"http://{host}:{workers.metrics_port(instance)}/metrics"

    def ready() -> str | None:
        try:
            joined = kafka.reports_group_membership(httpx.get(metrics_url, timeout=1.0).text,
                                                    workers.group)  # fmt: skip
        except httpx.HTTPError as exc:
            return f"its /metrics not answering ({exc.__class__.__name__})"
        if not joined:
            return f"not a member of {workers.group} (by its own account)"
        try:
            members = kafka.group_client_ids(topology, wiring.placement, state, workers.group)
        except Exception as exc:  # any Kafka client error means "not yet"
            return f"consumer group not readable yet ({exc.__class__.__name__})"
        return None if instance in members else f"not a member of {workers.group} yet"

    return ProcessSpec(
        name=instance,
        argv=[sys.executable, "-m", workers.module],
        env=worker_env(topology, wiring, workers, instance),
        cwd=REPO_ROOT,
        ports=(workers.metrics_port(instance),),
        ready=ready,
        stop_timeout=15,
    )


@dataclass
class Mesh:
    topology: Topology
    state: StateDir
    binaries: dict[str, dict[str, Path]]
    # The hosts it runs across (the hosts placement, docs/hosts.md); None: on this host.
    network: Network | None = None

    @classmethod
    def create(cls, topology: Topology, state: StateDir | None = None) -> Mesh:
        """The mesh of `state`, in the placement its `mesh up` chose (mesh/runtime/hosting.py)."""
        state = state or StateDir.default()
        state.ensure()
        protos.ensure_generated()
        network = hosting.network(state, topology)
        if network is not None:
            topology = replace(topology, hosts=network.hosts)
        return cls(topology, state, install_all(), network)

    @cached_property
    def placement(self) -> Placement:
        """On this host, on the topology's bind host; or spread over the network's hosts."""
        return hosting.placement(self.topology, self.network)

    def namespace_of(self, process_name: str) -> str | None:
        """The network namespace of the host a process runs on; None on this host."""
        placement = self.placement
        if self.network is None or not isinstance(placement, HostsPlacement):
            return None
        component = COMPANIONS.get(process_name, process_name.removesuffix(SIDECAR_SUFFIX))
        return self.network.namespace(placement.host_of(component).name)

    def on_host(self, component: str, call: Callable[[], T]) -> T:
        """`call()` on the host `component` runs on (where its loopback is reachable)."""
        namespace = self.namespace_of(component)
        return hosts.call_in(namespace, call) if namespace else call()

    # -- the plan -------------------------------------------------------------------------------

    def specs(self) -> list[ProcessSpec]:
        """Every process, in start order (stop order is the reverse)."""
        t, s = self.topology, self.state
        consul_bin = self.binaries["consul"]["consul"]
        envoy_bin = self.binaries["envoy"]["envoy"]
        p = self.placement
        agents = [consul.agent_spec(t, p, s, consul_bin, agent) for agent in p.consul_agents()]
        first_agent = agents[0].name
        agents[0].after_ready = lambda: consul.apply_config_entries(
            consul_bin, p.consul_http_addr(t, first_agent), s
        )
        specs = [*consul.server_specs(t, p, s, consul_bin), *agents]
        specs += postgres.node_specs(t, p, s, self.binaries["postgres"])
        # Before every process that sends spans, so none of the first ones is lost.
        specs.append(jaeger.server_spec(t, p, s, self.binaries["jaeger"]))
        specs += kafka.node_specs(t, p, s, self.binaries["kafka"])
        wiring = native_wiring(t, s, p)
        for instance in t.instances():
            specs.append(service_spec(t, s, wiring, instance))
            specs.append(
                consul.sidecar_spec(
                    t,
                    p,
                    s,
                    service=instance.service,
                    service_id=instance.id,
                    sidecar=instance.sidecar,
                    consul_bin=consul_bin,
                    envoy_bin=envoy_bin,
                )
            )
        for workers in t.workers:
            specs += [
                worker_spec(t, s, wiring, workers, instance) for instance in workers.instances
            ]
        # The edge's rate-limit service, and the store of its counters, before the edge.
        specs.append(ratelimit.redis_spec(t, p, s, self.binaries["redis"]))
        specs.append(ratelimit.service_spec(t, p, s, self.binaries["ratelimit"]))
        for edge_instance in t.edge.instances:
            specs.append(edge.edge_spec(t, p, s, envoy_bin, edge_instance))
            specs.append(self._edge_sidecar_spec(edge_instance, consul_bin, envoy_bin))
        # Once the edges can take requests: it checks them from its first second.
        specs.append(balancer.balancer_spec(t, p, s, self.binaries["haproxy"]["haproxy"]))
        specs.append(prometheus.discovery_spec(t, p, s))
        specs.append(prometheus.server_spec(t, p, s, self.binaries["prometheus"]))
        # Last: it restarts what died, so it starts once everything is up and stops first.
        specs.append(watchdog_spec(t, p, s))
        for spec in specs:
            spec.namespace = self.namespace_of(spec.name)
        return specs

    def _edge_sidecar_spec(
        self, edge: EdgeInstance, consul_bin: Path, envoy_bin: Path
    ) -> ProcessSpec:
        spec = consul.sidecar_spec(
            self.topology,
            self.placement,
            self.state,
            service=EDGE_SERVICE,
            service_id=edge.id,
            sidecar=edge.sidecar,
            consul_bin=consul_bin,
            envoy_bin=envoy_bin,
        )
        spec.ready = _all_of(spec.ready, lambda: self._edge_upstreams_healthy(edge))
        return spec

    def spec(self, name: str) -> ProcessSpec:
        for spec in self.specs():
            if spec.name == name:
                return spec
        raise MeshError(f"unknown component {name!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs()]

    def resolve(self, name: str) -> list[str]:
        """A process name, or a service or worker name meaning all of its instances (`kafka`:
        every node, `consul-servers`: every Consul server; `consul` is the client agent); in
        the hosts placement a host's name means every process on it."""
        if name in self.names():
            return [name]
        if self.network and name in self.network.names:
            namespace = self.network.namespace(name)
            return [spec.name for spec in self.specs() if spec.namespace == namespace]
        if name == "kafka":
            return [node.name for node in self.topology.kafka.nodes]
        if name == CONSUL_SERVERS:
            return [server.name for server in self.topology.consul_servers]
        if name == "edge":
            return [instance.id for instance in self.topology.edge.instances]
        if name == "postgres":
            return [node.name for node in self.topology.postgres_nodes]
        for workers in self.topology.workers:
            if workers.name == name:
                return list(workers.instances)
        try:
            return [i.id for i in self.topology.service(name).instances]
        except KeyError:
            raise MeshError(
                f"unknown component {name!r}; known: {', '.join(self.names())}"
            ) from None

    def _edge_upstreams_healthy(self, edge: EdgeInstance) -> str | None:
        """The edge's sidecar sees a healthy endpoint for every service the edge routes to."""
        admin_socket = envoy_admin.socket_path(self.state, f"{edge.id}-sidecar")
        try:
            with envoy_admin.client(admin_socket, timeout=1.0) as admin:
                text = admin.get("/clusters").text
        except httpx.HTTPError as exc:
            return f"edge sidecar admin not answering ({exc.__class__.__name__})"
        for up in edge.upstreams:
            prefix = f"{up.service}.default.{self.topology.datacenter}.internal."
            healthy = [
                line
                for line in text.splitlines()
                if line.startswith(prefix) and "health_flags::healthy" in line
            ]
            if not healthy:
                return f"no healthy {up.service} endpoint in the edge sidecar yet"
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    def running(self) -> dict[str, process.Running]:
        found = {}
        for name in self.names():
            current = process.running(self.state, name)
            if current:
                found[name] = current
        return found

    def up(self, say: Callable[[str], None] = print) -> None:
        with private_files(), self._lock():
            already = self.running()
            if already:
                raise AlreadyRunning(
                    f"the mesh is already running from {self.state.root} "
                    f"({', '.join(already)}); see `mesh status`, or `mesh down` first"
                )
            watchdog.release_all(self.state)
            # A state dir an earlier version made (before every process got PRIVATE_UMASK).
            make_private(self.state.root)
            started_at = time.monotonic()
            for wave in start_waves.waves(self.topology, self.specs()):
                start_waves.start_together(wave, lambda spec: self._start_one(spec, say))
            say(f"mesh is up in {time.monotonic() - started_at:.1f}s")

    def _start_one(self, spec: ProcessSpec, say: Callable[[str], None]) -> None:
        # Checked in the process's host (process.start runs this there): any of its
        # addresses, in the hosts placement, where agents listen on loopback and address both.
        host = self.topology.bind_host if self.network is None else ANY

        def ports_free() -> None:
            for port in spec.ports:
                ensure_port_free(host, port, spec.name)

        t0 = time.monotonic()
        proc = process.start(self.state, spec, precondition=ports_free)
        process.wait_ready(self.state, spec)
        say(f"  {spec.name:<24} pid {proc.pid:<8} ready in {time.monotonic() - t0:.1f}s")

    def start(self, name: str, say: Callable[[str], None] = print) -> None:
        """Start what is not running (and let the watchdog look after it again)."""

        def start_if_down(spec: ProcessSpec) -> None:
            if process.running(self.state, spec.name):
                say(f"  {spec.name} is already running")
            else:
                self._start_one(spec, say)
            watchdog.release(self.state, spec.name)

        with private_files():
            specs = [self.spec(proc_name) for proc_name in self.resolve(name)]
            running = partial(process.running, self.state)
            for wave in start_waves.beside_running(self.topology, specs, running):
                start_waves.start_together(wave, start_if_down)

    def kill(self, name: str, *, hold: bool = False) -> list[str]:
        """SIGKILL, as a crash: the watchdog restarts it, unless `hold` keeps it down until
        `start`."""
        names = self.resolve(name)
        if hold:
            with private_files():
                for proc_name in names:
                    watchdog.hold(self.state, proc_name)
        killed = [n for n in names if process.kill(self.state, n)]
        for node in self.topology.postgres_nodes:
            if node.name in names:  # its Postgres runs apart from Patroni: the node dies whole
                postgres.kill_postmaster(self.state, node)
        return killed

    def stop(self, name: str) -> list[str]:
        """Stop gracefully (draining first what drains) and keep it down (the watchdog leaves it
        alone) until `start`."""
        stopped = []
        for proc_name in self.resolve(name):
            with private_files():
                watchdog.hold(self.state, proc_name)
            spec = self.spec(proc_name)
            if spec.before_stop and process.running(self.state, proc_name):
                process.there(spec, spec.before_stop)
            if process.stop(self.state, proc_name, timeout=spec.stop_timeout):
                stopped.append(proc_name)
            self._kill_orphaned_postmaster(proc_name)
        return stopped

    def _kill_orphaned_postmaster(self, name: str) -> None:
        """A Patroni stopped stops its Postgres; one that had to be killed leaves it running."""
        for node in self.topology.postgres_nodes:
            if node.name == name:
                postgres.kill_postmaster(self.state, node)

    def restarts(self) -> dict[str, int]:
        """How many times the watchdog restarted each process since `up`."""
        return watchdog.load_restarts(self.state)

    def down(self, say: Callable[[str], None] = print) -> None:
        """Everything stopped, in the reverse of the start's waves: the instances of a service
        together, the brokers together."""
        specs = self.specs()
        kafka_names = self._kafka_names()
        kafka_nodes = [spec for spec in specs if spec.name in kafka_names]

        def stop_one(spec: ProcessSpec) -> None:
            if process.stop(self.state, spec.name, timeout=spec.stop_timeout):
                say(f"  stopped {spec.name}")
            if spec.name in self._edge_names():
                self._deregister_edge(spec.name)
            self._kill_orphaned_postmaster(spec.name)

        for wave in start_waves.stop_order(self.topology, specs):
            if any(spec.name in kafka_names for chain in wave for spec in chain):
                # Together: one at a time, the last node would wait for a lost quorum.
                for name in kafka.stop_nodes(self.state, kafka_nodes):
                    say(f"  stopped {name}")
                kafka_nodes = []
                continue
            start_waves.together(wave, stop_one)
        envoy_admin.remove(self.state)
        if self.network is not None:
            for host, pids in netfaults.down(self.network).items():
                say(f"  SIGKILLed what still ran in {host}: {', '.join(map(str, pids))}")
            say(f"  removed the hosts ({', '.join(self.network.names)})")

    def _edge_names(self) -> set[str]:
        return {instance.id for instance in self.topology.edge.instances}

    def _deregister_edge(self, edge_id: str) -> None:
        addr = self.placement.consul_http_addr(self.topology, edge_id)
        client = consul.operator_client(addr, self.state, timeout=1.0)
        try:
            self.on_host(edge_id, lambda: client.deregister(edge_id))
        except (httpx.HTTPError, FileNotFoundError):
            # Consul is down, or the edge was never registered (no token yet): nothing to undo.
            pass
        finally:
            client.close()

    def status(self) -> Iterator[tuple[str, str, str, str]]:
        """(name, pid, ports, health) for every component."""
        for spec in self.specs():
            current = process.running(self.state, spec.name)
            ports = ",".join(str(p) for p in spec.ports)
            if spec.name == self.topology.postgres_nodes[-1].name:
                yield from self._postgres_node_and_cluster_status(spec, current, ports)
                continue
            if not current:
                yield spec.name, "-", ports, "stopped"
                continue
            reason = process.there(spec, spec.ready) if spec.ready else None
            yield spec.name, str(current.pid), ports, reason if reason else "healthy"
            if spec.name == self.topology.kafka.nodes[-1].name:
                yield self._kafka_cluster_status()
            if spec.name == self.topology.consul_servers[-1].name:
                yield (
                    CONSUL_CLUSTER,
                    "-",
                    "",
                    consul.cluster_health(self.topology, self.placement, self.state, self.on_host),
                )

    def _postgres_node_and_cluster_status(
        self, spec: ProcessSpec, current: process.Running | None, ports: str
    ) -> Iterator[tuple[str, str, str, str]]:
        """The last node's row (only whether its Postgres runs: its readiness is the cluster's),
        then who leads."""
        if current:
            node = self.topology.postgres_nodes[-1]
            reason = postgres.node_running(self.placement, node)
            yield spec.name, str(current.pid), ports, reason or "healthy"
        else:
            yield spec.name, "-", ports, "stopped"
        yield POSTGRES_CLUSTER, "-", "", postgres.cluster_health(self.topology, self.placement)

    def _kafka_names(self) -> set[str]:
        return {node.name for node in self.topology.kafka.nodes}

    def _kafka_cluster_status(self) -> tuple[str, str, str, str]:
        """The cluster as a whole: does every partition have its full ISR?"""
        nodes = self.topology.kafka.nodes
        down = frozenset(n.id for n in nodes if not process.running(self.state, n.name))
        if len(down) == len(nodes):
            return KAFKA_CLUSTER, "-", "", "stopped"
        health = kafka.cluster_health(self.topology, self.placement, self.state, down)
        return KAFKA_CLUSTER, "-", "", health

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.state.root / ".lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AlreadyRunning(f"another `mesh up` is running on {self.state.root}") from None
            yield


def watchdog_spec(topology: Topology, placement: Placement, state: StateDir) -> ProcessSpec:
    metrics = f"http://{placement.host(WATCHDOG)}:{topology.watchdog_port}/metrics"

    def ready() -> str | None:
        try:
            httpx.get(metrics, timeout=1.0).raise_for_status()
        except httpx.HTTPError as exc:
            return f"its /metrics not answering ({exc.__class__.__name__})"
        return None

    return ProcessSpec(
        name=watchdog.NAME,
        argv=[sys.executable, "-m", "mesh.runtime.watchdog"],
        env={"SHOPMESH_STATE_DIR": str(state.root), "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
        ports=(topology.watchdog_port,),
        ready=ready,
        stop_timeout=5,
    )


def _all_of(*checks: Callable[[], str | None] | None) -> Callable[[], str | None]:
    def check() -> str | None:
        for one in checks:
            reason = one() if one else None
            if reason:
                return reason
        return None

    return check


def ensure_port_free(host: str, port: int, wanted_by: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise MeshError(
                f"port {host}:{port}, needed by {wanted_by}, is already in use{_owner(port)}. "
                "Stop that process (a mesh from another state dir? `mesh down`), "
                "or change the port in mesh/topology.yaml."
            ) from None


def _owner(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.laddr and conn.laddr.port == port and listening and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return ""
