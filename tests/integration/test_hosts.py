"""Hosts as real network namespaces, and real faults between them (mesh/runtime/hosts.py,
mesh/runtime/netfaults.py, docs/hosts.md). No mesh: small echo servers and UDP sockets made in
the hosts' namespaces, talking over the real bridge.

The tests make hosts of their own (namespaces `shopmesh-test-*`, links `smt*`, 10.86.1.0/24),
so they never meet a user's `mesh net up` (`shopmesh-*`, `sm*`, 10.86.0.0/24). Needs root.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from mesh.runtime import hosts, netfaults
from mesh.runtime.hosts import NetError, Network
from mesh.runtime.netfaults import LOSS, PARTITION
from mesh.topology import Hosts
from tests.support import wait_for

NETWORK = Network(
    Hosts.on(IPv4Network("10.86.1.0/24"), ("a", "b", "c"), "lb"), "shopmesh-test", "smt"
)
PORT = 7700


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    netfaults.down(NETWORK)  # what an interrupted run left
    hosts.create(NETWORK)
    yield NETWORK
    netfaults.down(NETWORK)


@pytest.fixture(autouse=True)
def healed(network: Network) -> Iterator[None]:
    yield
    netfaults.heal(network)


def socket_on(network: Network, host: str, kind: socket.SocketKind) -> socket.socket:
    sock = hosts.socket_in(network.namespace(host), socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


class Echo:
    """A TCP echo server on a host: every connection gets back what it sends."""

    def __init__(self, network: Network, host: str) -> None:
        self.address = (network.address(host), PORT)
        self.server = socket_on(network, host, socket.SOCK_STREAM)
        self.server.bind(self.address)
        self.server.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(), which would keep the port otherwise.
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


@pytest.fixture
def echo_on_b(network: Network) -> Iterator[Echo]:
    echo = Echo(network, "b")
    yield echo
    echo.close()


def connect(sock: socket.socket, address: tuple[str, int], timeout: float) -> socket.socket:
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(address)
    return sock


def echoes(sock: socket.socket, message: bytes) -> bool:
    sock.sendall(message)
    received = b""
    while len(received) < len(message):
        received += sock.recv(4096)
    return received == message


def round_trips(sock: socket.socket, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started = time.monotonic()
        assert echoes(sock, b"x")
        took.append(time.monotonic() - started)
    return took


def packets_taken(network: Network, host: str, chain: str) -> int:
    """How many packets the rules of `chain` in `host` took (the kernel's counters)."""
    listing = hosts.run(
        hosts.in_namespace(network.namespace(host), ["iptables", "-w", "-S", chain, "-v"])
    )
    return sum(seen.packets for seen in netfaults.read_rules(listing))


def drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1


def udp_receiver(network: Network, host: str) -> socket.socket:
    sock = socket_on(network, host, socket.SOCK_DGRAM)
    # Room for every datagram of a test, so the socket itself never drops one.
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    sock.bind((network.address(host), PORT))
    sock.setblocking(False)
    return sock


def test_hosts_reach_each_other_and_the_root_namespace_reaches_them(
    network: Network, echo_on_b: Echo
) -> None:
    with connect(socket_on(network, "a", socket.SOCK_STREAM), echo_on_b.address, 5) as a:
        assert echoes(a, b"from a, in its own namespace")
    with connect(socket.socket(), echo_on_b.address, 5) as root:
        assert echoes(root, b"from the root namespace")
    for state in hosts.states(network):
        assert state.up and state.addresses == (state.address,), state


def test_creating_the_hosts_again_changes_nothing(network: Network, echo_on_b: Echo) -> None:
    hosts.create(network)
    with connect(socket_on(network, "c", socket.SOCK_STREAM), echo_on_b.address, 5) as c:
        assert echoes(c, b"still there")


def test_a_partition_stops_traffic_both_ways_and_heal_restores_it(
    network: Network, echo_on_b: Echo
) -> None:
    netfaults.partition(network, "b")
    with pytest.raises(TimeoutError), socket_on(network, "a", socket.SOCK_STREAM) as a:
        connect(a, echo_on_b.address, 1)
    echo_on_a = Echo(network, "a")
    try:
        with pytest.raises(TimeoutError), socket_on(network, "b", socket.SOCK_STREAM) as b:
            connect(b, echo_on_a.address, 1)
    finally:
        echo_on_a.close()
    # The root namespace (the CLI's) is no host: it still reaches the cut-off one.
    with connect(socket.socket(), echo_on_b.address, 5) as root:
        assert echoes(root, b"control link")
    netfaults.heal(network)
    with connect(socket_on(network, "a", socket.SOCK_STREAM), echo_on_b.address, 5) as a:
        assert echoes(a, b"healed")


def test_a_one_way_partition_loses_what_the_host_sends_but_not_what_it_receives(
    network: Network,
) -> None:
    netfaults.partition(network, "a", "b", one_way=True)
    on_a, on_b = udp_receiver(network, "a"), udp_receiver(network, "b")
    with on_a, on_b:
        for _ in range(10):
            on_a.sendto(b"a to b", (network.address("b"), PORT))
            on_b.sendto(b"b to a", (network.address("a"), PORT))
        # Every datagram a sent reached b and was dropped there by the cut.
        wait_for(
            lambda: packets_taken(network, "b", PARTITION) == 10,
            timeout=10,
            what="b's cut to drop a's 10 datagrams",
        )
        assert drain(on_b) == 0
        received = [0]

        def all_of_bs_arrived() -> bool:
            received[0] += drain(on_a)
            return received[0] == 10

        wait_for(all_of_bs_arrived, timeout=10, what="a to receive b's 10 datagrams")
        assert packets_taken(network, "a", PARTITION) == 0


def test_full_loss_is_refused_it_is_a_partition(network: Network) -> None:
    with pytest.raises(NetError, match="100 % is a partition"):
        netfaults.set_loss(network, 100)
    assert not any(
        seen.comment.startswith("loss")
        for rules in netfaults.active(network).values()
        for seen in rules
    )


def test_thirty_percent_loss_drops_about_that_share_of_a_thousand_datagrams(
    network: Network,
) -> None:
    netfaults.set_loss(network, 30)
    sender, receiver = udp_receiver(network, "a"), udp_receiver(network, "b")
    with sender, receiver:
        for n in range(1000):
            sender.sendto(n.to_bytes(4, "big"), (network.address("b"), PORT))
        received = [0]

        def every_datagram_is_received_or_dropped() -> bool:
            received[0] += drain(receiver)
            return received[0] + packets_taken(network, "b", LOSS) == 1000

        wait_for(
            every_datagram_is_received_or_dropped,
            timeout=20,
            what="b to receive or drop every one of a's 1000 datagrams",
        )
    # 30 % of 1000 has a standard deviation of about 14.5: ±150 is far beyond chance.
    assert 550 <= received[0] <= 850, received[0]


def test_a_delay_raises_a_tcp_round_trip_by_at_least_the_delay(
    network: Network, echo_on_b: Echo
) -> None:
    delay_ms, jitter_ms = 50, 10
    with connect(socket_on(network, "a", socket.SOCK_STREAM), echo_on_b.address, 5) as a:
        before = statistics.median(round_trips(a, 10))
        netfaults.set_delay(network, delay_ms, jitter_ms)
        after = round_trips(a, 10)
    # Each packet waits delay ± jitter once, both ways: a round trip at least twice
    # (delay - jitter), which is more than the delay.
    assert min(after) - before >= delay_ms / 1000, (before, after)
    assert min(after) >= 2 * (delay_ms - jitter_ms) / 1000, after
    assert netfaults.delayer_pids(network)
    netfaults.heal(network)
    assert not netfaults.delayer_pids(network)


def test_killing_a_host_sigkills_every_process_in_it_and_no_other(network: Network) -> None:
    sleep = ["sleep", "600"]
    on_a = subprocess.Popen(hosts.in_namespace(network.namespace("a"), sleep))
    on_c = subprocess.Popen(hosts.in_namespace(network.namespace("c"), sleep))
    try:
        wait_for(
            lambda: on_a.pid in hosts.processes_in(network.namespace("a")),
            timeout=10,
            what="the sleep to run in host a",
        )
        killed = netfaults.kill_host(network, "a")
        assert on_a.pid in killed
        assert on_a.wait(timeout=10) == -signal.SIGKILL
        assert hosts.processes_in(network.namespace("a")) == []
        assert on_c.poll() is None
    finally:
        on_c.kill()
        on_c.wait()


def test_down_leaves_no_namespace_link_rule_or_delayer_and_touches_nothing_else(
    network: Network,
) -> None:
    gone = Network(Hosts.on(IPv4Network("10.86.2.0/24"), ("x", "y"), "lb"), "shopmesh-gone", "smg")
    # A link of one of its names that is not its kind is someone else's: refused, left alone.
    hosts.run(["ip", "link", "add", gone.bridge, "type", "veth", "peer", "impostor0"])
    try:
        with pytest.raises(NetError, match="not ours"):
            hosts.create(gone)
        with pytest.raises(NetError, match="not ours"):
            netfaults.down(gone)
    finally:
        hosts.run(["ip", "link", "del", gone.bridge])
    hosts.create(gone)
    hosts.create(gone)
    netfaults.partition(gone, "x", "y", one_way=True)
    netfaults.set_loss(gone, 10)
    netfaults.set_delay(gone, 5)
    straggler = subprocess.Popen(hosts.in_namespace(gone.namespace("y"), ["sleep", "600"]))
    wait_for(
        lambda: straggler.pid in hosts.processes_in(gone.namespace("y")),
        timeout=10,
        what="the sleep to run in host y",
    )
    assert netfaults.down(gone) == {"y": [straggler.pid]}
    assert straggler.wait(timeout=10) == -signal.SIGKILL
    namespaces = hosts.run(["ip", "netns", "list"])
    assert not [line for line in namespaces.splitlines() if line.startswith("shopmesh-gone-")]
    links = [link["ifname"] for link in json.loads(hosts.run(["ip", "-j", "link", "show"]))]
    assert not [name for name in links if name.startswith("smg")], links
    assert not netfaults.delayer_pids(gone)
    assert not Path("/run/shopmesh-gone-net").exists()  # the delayer's log
    # The rules were in the hosts' namespaces, gone with them; the test hosts are untouched.
    assert all(state.up for state in hosts.states(network))
    assert netfaults.down(gone) == {}
