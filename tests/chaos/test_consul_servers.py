"""Consul's servers failing under orders at 10/s through the edge: a follower, the leader, two of
three, all three. The host's client agent keeps its registrations and checks and the sidecars
their xDS, so orders flow; what needs the servers (a write) waits for a quorum."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from mesh.components.consul import ConsulClient
from mesh.runtime.supervisor import CONSUL_SERVERS, Mesh
from mesh.runtime.tls import consul_ca
from mesh.topology import ConsulServer, Topology
from tests.chaos.order_load import USERS, OrderLoad, assert_every_order_paid_once
from tests.integration.test_messaging_flow import workers as workers
from tests.support import FreshClient, operator_consul, wait_for

# Requests answered before the fault, and while it lasts (about 10 s at 10/s).
BEFORE = 20
DURING = 100
MAX_ERROR_RATIO = 0.01


def _server_api(mesh: Mesh, server: ConsulServer) -> httpx.Client:
    return httpx.Client(
        base_url=mesh.placement.consul_server_addr(server),
        timeout=1.0,
        verify=ssl.create_default_context(cafile=str(consul_ca(mesh.state))),
    )


def leader_of(mesh: Mesh, servers: tuple[ConsulServer, ...]) -> str | None:
    """The server the given ones agree leads, by name; None while they do not agree on one."""
    by_rpc_port = {s.server: s.name for s in mesh.topology.consul_servers}
    seen = set()
    for server in servers:
        try:
            with _server_api(mesh, server) as api:
                seen.add(api.get("/v1/status/leader").json())
        except httpx.HTTPError:
            return None
    if len(seen) != 1 or not (leader := seen.pop()):
        return None
    return by_rpc_port[int(leader.rsplit(":", 1)[1])]


def quorum_whole(mesh: Mesh) -> bool:
    """A leader, every server a healthy voter: autopilot tolerates one failure again (read
    with the operator token)."""
    addr = mesh.placement.consul_server_addr(mesh.topology.consul_servers[0])
    with operator_consul(mesh, addr, timeout=1.0) as consul:
        health = consul.http.get("/v1/operator/autopilot/health").json()
    return bool(health["Healthy"]) and health["FailureTolerance"] == 1


def wait_quorum_whole(mesh: Mesh) -> None:
    wait_for(lambda: quorum_whole(mesh), timeout=60,
             what="every consul server to be a healthy voter again")  # fmt: skip


def server(topology: Topology, name: str) -> ConsulServer:
    return next(s for s in topology.consul_servers if s.name == name)


@pytest.fixture
def clients(edge_as_fresh: Callable[[], FreshClient]) -> list[FreshClient]:
    return [edge_as_fresh() for _ in range(USERS)]


@pytest.fixture
def servers_restored(mesh: Mesh) -> Iterator[None]:
    """Whatever a test killed is started again, and the quorum whole, before the next."""
    wait_quorum_whole(mesh)
    yield
    mesh.start(CONSUL_SERVERS, say=lambda _: None)
    wait_quorum_whole(mesh)


def kv_write(consul: ConsulClient, key: str) -> int | str:
    """A write through the agent: its status code, or the exception that ended it."""
    try:
        return consul.http.put(f"/v1/kv/{key}", content="1", timeout=20.0).status_code
    except httpx.HTTPError as exc:
        return exc.__class__.__name__


@pytest.mark.usefixtures("workers", "servers_restored")
@pytest.mark.parametrize("role", ["follower", "leader"])
def test_orders_flow_while_a_consul_server_is_killed_and_it_rejoins_after(
    mesh: Mesh, clients: list[FreshClient], consul: ConsulClient, role: str
) -> None:
    t = mesh.topology
    leader = leader_of(mesh, t.consul_servers)
    assert leader, "a leader before the fault"
    followers = [s.name for s in t.consul_servers if s.name != leader]
    victim = leader if role == "leader" else followers[0]
    survivors = tuple(s for s in t.consul_servers if s.name != victim)
    with OrderLoad(clients) as load:
        load.wait_answered(BEFORE, what="orders before the fault")
        killed_at = time.monotonic()
        assert mesh.kill(victim, hold=True) == [victim]
        new_leader = wait_for(
            lambda: (found := leader_of(mesh, survivors)) != victim and found,
            timeout=30,
            what=f"the other servers to agree on a leader other than {victim}",
        )
        elected_after = time.monotonic() - killed_at
        load.wait_answered(BEFORE + DURING, what=f"orders while {victim} is down")
        assert kv_write(consul, f"shopmesh/test/{role}-down") == 200, "two of three write"
        mesh.start(victim, say=lambda _: None)
        wait_quorum_whole(mesh)
        rejoined_after = time.monotonic() - killed_at
    answers = load.stop()
    print(
        f"{role} {victim} killed: leader {new_leader} after {elected_after:.1f}s; "
        f"whole again {rejoined_after:.1f}s after the kill; {answers.summary()}"
    )
    if role == "leader":
        assert new_leader != victim
    else:
        assert new_leader == leader, "losing a follower leaves the leader leading"
    assert answers.errors <= MAX_ERROR_RATIO * answers.total, answers.summary()
    assert_every_order_paid_once(mesh, answers)
    consul.delete_kv(f"shopmesh/test/{role}-down")


@pytest.mark.usefixtures("workers", "servers_restored")
def test_with_two_of_three_servers_down_writes_fail_but_orders_flow_and_quorum_returns(
    mesh: Mesh, clients: list[FreshClient], consul: ConsulClient
) -> None:
    t = mesh.topology
    victims = [s.name for s in t.consul_servers[:2]]
    key = "shopmesh/test/no-quorum"
    with OrderLoad(clients) as load:
        load.wait_answered(BEFORE, what="orders before the fault")
        for victim in victims:
            mesh.kill(victim, hold=True)
        lone = t.consul_servers[2:]
        wait_for(lambda: leader_of(mesh, lone) is None, timeout=30,
                 what=f"{lone[0].name} to lose its leader")  # fmt: skip
        refused = kv_write(consul, key)
        load.wait_answered(BEFORE + DURING, what="orders while two servers are down")
        restarted_at = time.monotonic()
        mesh.start(victims[0], say=lambda _: None)
        wait_for(lambda: leader_of(mesh, (*lone, server(t, victims[0]))), timeout=60,
                 what="a leader once two servers run again")  # fmt: skip
        elected_after = time.monotonic() - restarted_at
        mesh.start(victims[1], say=lambda _: None)
        wait_quorum_whole(mesh)
    answers = load.stop()
    print(
        f"{victims} killed: the write got {refused!r}; a leader {elected_after:.1f}s after "
        f"restarting {victims[0]}; {answers.summary()}"
    )
    assert refused != 200, "no write without a quorum"
    assert consul.http.get(f"/v1/kv/{key}").status_code == 404, "the refused write never landed"
    assert kv_write(consul, key) == 200, "writes resume with the quorum"
    consul.delete_kv(key)
    assert answers.errors <= MAX_ERROR_RATIO * answers.total, answers.summary()
    assert_every_order_paid_once(mesh, answers)


@pytest.mark.usefixtures("workers", "servers_restored")
def test_orders_flow_while_every_consul_server_is_down_and_the_agent_keeps_its_checks(
    mesh: Mesh, clients: list[FreshClient], consul: ConsulClient
) -> None:
    """The control plane down: the agent's own checks keep running, so nothing turns critical
    when the servers return, unlike an agent's restart (test_process_failures.py)."""
    t = mesh.topology
    ids = [i.id for i in t.instances()] + [e.id for e in t.edge.instances]
    with OrderLoad(clients) as load:
        load.wait_answered(BEFORE, what="orders before the fault")
        assert sorted(mesh.kill(CONSUL_SERVERS, hold=True)) == sorted(mesh.resolve(CONSUL_SERVERS))
        load.wait_answered(BEFORE + DURING, what="orders while every server is down")
        assert {consul.agent_health(i) for i in ids} == {"passing"}, "the agent checks alone"
        restarted_at = time.monotonic()
        mesh.start(CONSUL_SERVERS, say=lambda _: None)
        wait_for(lambda: leader_of(mesh, t.consul_servers), timeout=60,
                 what="a leader once the servers are back")  # fmt: skip
        elected_after = time.monotonic() - restarted_at
        # Orders go on while the agent syncs its registrations to the servers again.
        load.wait_answered(load.answered() + DURING // 2, what="orders after the servers return")
    answers = load.stop()
    print(f"every server killed: a leader {elected_after:.1f}s after restarting them; "
          f"{answers.summary()}")  # fmt: skip
    assert answers.errors <= MAX_ERROR_RATIO * answers.total, answers.summary()
    assert_every_order_paid_once(mesh, answers)
    catalog = consul.http.get("/v1/catalog/service/orders").json()
    assert {s["ServiceID"] for s in catalog} == {i.id for i in t.service("orders").instances}


@pytest.mark.usefixtures("servers_restored")
def test_the_watchdog_restarts_a_killed_consul_server_and_it_is_a_healthy_voter_again(
    mesh: Mesh,
) -> None:
    t = mesh.topology
    victim = t.consul_servers[-1].name
    before = mesh.running()[victim].pid
    killed_at = time.monotonic()
    assert mesh.kill(victim) == [victim]
    wait_for(lambda: victim in mesh.running() and mesh.running()[victim].pid != before,
             timeout=30, what=f"the watchdog to start {victim} again")  # fmt: skip
    wait_quorum_whole(mesh)
    print(f"{victim} killed: a healthy voter again {time.monotonic() - killed_at:.1f}s later")
    assert mesh.restarts()[victim] >= 1
