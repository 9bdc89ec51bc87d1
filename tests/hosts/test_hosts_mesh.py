"""The whole mesh across network-namespace hosts (`mesh up --placement hosts`, docs/hosts.md):
an order through the balancer on its own host is paid once; each service's instances run in
different hosts' namespaces and listen on their host's address, not its loopback; the Consul agents'
APIs and the Envoys' admin APIs are reachable from their own host only. Needs root; its own
state dir, hosts and subnet (tests/conftest.py `hosts_mesh`)."""

from __future__ import annotations

import errno
import json
import os
import socket
from functools import partial
from pathlib import Path

import pytest

from mesh.placement import HostsPlacement, consul_agent_on
from mesh.runtime import consul as consul_runtime
from mesh.runtime import demo, hosts, process
from mesh.runtime.envoy_admin import client as envoy_admin_client
from mesh.runtime.envoy_admin import socket_path
from mesh.runtime.supervisor import Mesh
from tests.integration.test_messaging_flow import assert_charged_once, wait_all
from tests.support import edge_client, wait_for

# The first test also waits for the session's hosts mesh to come up (every process's start is
# bounded by its own readiness deadline): on a busy machine that alone nears pytest's 300 s.
pytestmark = pytest.mark.timeout(900)

# /proc/net/tcp's `st` of a listening socket.
TCP_LISTEN = "0A"


def placement_of(mesh: Mesh) -> HostsPlacement:
    assert isinstance(mesh.placement, HostsPlacement)
    return mesh.placement


def net_namespace(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def host_namespace(mesh: Mesh, host: str) -> tuple[int, int]:
    assert mesh.network is not None
    st = os.stat(hosts.NETNS_DIR / mesh.network.namespace(host))
    return st.st_dev, st.st_ino


def connect_error(address: str, port: int, namespace: str | None = None) -> int | None:
    """The errno of a TCP connection to address:port (None: it connected), made from the host's
    namespace, or from this one."""

    def attempt() -> int | None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(3.0)
            return sock.connect_ex((address, port)) or None

    return hosts.call_in(namespace, attempt) if namespace else attempt()


def test_an_order_through_the_balancer_on_its_own_host_is_paid_once(hosts_mesh: Mesh) -> None:
    placement = placement_of(hosts_mesh)
    topology = hosts_mesh.topology
    assert placement.components_on(topology.hosts.balancer.name) == [
        consul_agent_on(topology.hosts.balancer.name),
        "balancer",
    ]
    token = partial(demo.token, topology, hosts_mesh.state, "alice", placement)
    with edge_client(topology, token, placement) as edge:
        assert str(edge.base_url).startswith(f"http://{topology.hosts.balancer.address}:")
        order = {"userId": "alice", "items": [{"productId": "book", "quantity": 1}]}
        response = edge.post("/orders", json=order, timeout=30.0)
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    wait_all(hosts_mesh, [order_id], "PAID", timeout=60)
    assert_charged_once(hosts_mesh, [order_id])


def test_each_services_instances_run_in_different_hosts_namespaces(hosts_mesh: Mesh) -> None:
    placement = placement_of(hosts_mesh)
    running = hosts_mesh.running()
    groups = [[i.id for i in s.instances] for s in hosts_mesh.topology.services]
    groups += [list(w.instances) for w in hosts_mesh.topology.workers]
    groups.append([e.id for e in hosts_mesh.topology.edge.instances])
    for group in groups:
        assert len(group) >= 2, group
        namespaces = set()
        for name in group:
            where = net_namespace(running[name].pid)
            assert where == host_namespace(hosts_mesh, placement.host_of(name).name), name
            namespaces.add(where)
        assert len(namespaces) == len(group), f"{group} share a host"
    # A sidecar runs beside its instance.
    for instance in hosts_mesh.topology.instances():
        sidecar = running[f"{instance.id}-sidecar"].pid
        assert net_namespace(sidecar) == net_namespace(running[instance.id].pid)


def test_a_service_is_reached_at_its_hosts_address_and_not_on_its_hosts_loopback(
    hosts_mesh: Mesh,
) -> None:
    # Asked from the instance's own host: the root namespace's loopback is another network
    # (and in the full suite the native mesh's instances listen there on the same ports).
    assert hosts_mesh.network is not None
    placement = placement_of(hosts_mesh)
    for instance in hosts_mesh.topology.instances():
        own = hosts_mesh.network.namespace(placement.host_of(instance.id).name)
        assert connect_error(placement.address(instance.id), instance.port) is None, instance.id
        refused = connect_error("127.0.0.1", instance.port, own)
        assert refused == errno.ECONNREFUSED, instance.id


def test_a_consul_agents_api_answers_its_own_host_only(hosts_mesh: Mesh) -> None:
    placement = placement_of(hosts_mesh)
    assert hosts_mesh.network is not None
    https = hosts_mesh.topology.consul_ports.https
    for host in hosts_mesh.topology.hosts.all:
        agent = consul_agent_on(host.name)
        own = hosts_mesh.network.namespace(host.name)
        with consul_runtime.operator_client(
            placement.consul_http_addr(hosts_mesh.topology, agent), hosts_mesh.state
        ) as client:
            assert hosts.call_in(own, client.leader), f"{agent} knows no leader"
        for other in hosts_mesh.network.names:
            if other == host.name:
                continue
            refused = connect_error(host.address, https, hosts_mesh.network.namespace(other))
            assert refused == errno.ECONNREFUSED, f"{agent} reached from {other}"
    for server in hosts_mesh.topology.consul_servers:
        address = placement.address(server.name)
        assert connect_error(address, server.https) == errno.ECONNREFUSED, server.name


def listeners(pid: int) -> set[tuple[str, int]]:
    """The TCP sockets process `pid` listens on, (address, port), as its network namespace's
    /proc/<pid>/net/tcp has them."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == TCP_LISTEN and inode in inodes:
            address, port = local.split(":")
            found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    return found


@pytest.mark.parametrize("instance", ["orders-1", "payments-2"])
def test_a_sidecars_envoy_admin_api_is_on_its_owner_only_socket_not_on_a_port(
    hosts_mesh: Mesh, instance: str
) -> None:
    sidecar = f"{instance}-sidecar"
    admin = socket_path(hosts_mesh.state, sidecar)
    with envoy_admin_client(admin, timeout=2.0) as client:
        assert client.get("/ready").text.strip() == "LIVE"
    assert admin.stat().st_mode & 0o077 == 0
    bootstrap = json.loads((hosts_mesh.state.secrets / f"{sidecar}-bootstrap.json").read_text())
    assert bootstrap["admin"]["address"] == {"pipe": {"path": str(admin), "mode": 0o600}}
    # Its TCP listeners: the public mTLS one and /metrics on its host's address, its upstreams
    # on its host's loopback; nothing else.
    topology = hosts_mesh.topology
    (found,) = [i for i in topology.instances() if i.id == instance]
    address = placement_of(hosts_mesh).address(instance)
    upstreams = {
        ("127.0.0.1", u.local_bind_port) for u in topology.service(found.service).upstreams
    }
    pid = hosts_mesh.running()[sidecar].pid
    assert listeners(pid) == {
        (address, found.sidecar.port),
        (address, found.sidecar.metrics_port),
        *upstreams,
    }


def test_a_consul_agent_listens_beyond_its_hosts_loopback_only_for_gossip(
    hosts_mesh: Mesh,
) -> None:
    placement = placement_of(hosts_mesh)
    ports = hosts_mesh.topology.consul_ports
    running = hosts_mesh.running()
    for agent in placement.consul_agents():
        address = placement.address(agent)
        assert listeners(running[agent].pid) == {
            (address, ports.serf_lan),
            ("127.0.0.1", ports.https),
            ("127.0.0.1", ports.grpc),
        }, agent
    for server in hosts_mesh.topology.consul_servers:
        address = placement.address(server.name)
        assert listeners(running[server.name].pid) == {
            (address, server.serf_lan),
            (address, server.server),
            ("127.0.0.1", server.https),
        }, server.name


def test_the_watchdog_restarts_a_killed_instance_in_its_own_host(hosts_mesh: Mesh) -> None:
    victim = "orders-2"
    host = placement_of(hosts_mesh).host_of(victim).name
    watchdog_host = placement_of(hosts_mesh).host_of("watchdog").name
    assert host != watchdog_host  # the restart crosses from one host's namespace into another
    before = hosts_mesh.running()[victim].pid
    assert hosts_mesh.kill(victim) == [victim]

    def restarted() -> process.Running | None:
        now = hosts_mesh.running().get(victim)
        return now if now and now.pid != before else None

    again = wait_for(restarted, timeout=60, what=f"the watchdog to restart {victim}")
    assert net_namespace(again.pid) == host_namespace(hosts_mesh, host)
    spec = hosts_mesh.spec(victim)
    assert spec.ready is not None
    ready = spec.ready
    wait_for(lambda: process.there(spec, ready) is None, timeout=90,
             what=f"{victim} registered and passing again")  # fmt: skip
