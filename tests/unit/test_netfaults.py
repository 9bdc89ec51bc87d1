"""The faults between hosts (mesh/runtime/netfaults.py) as the iptables command lines they
become, and the delayer's nfnetlink_queue messages (mesh/runtime/delayer.py), without a kernel."""

from __future__ import annotations

import struct
from ipaddress import IPv4Network

import pytest

from mesh.runtime import delayer, hosts, netfaults
from mesh.runtime.cli import build_parser
from mesh.runtime.hosts import NetError, Network
from mesh.runtime.netfaults import DELAY, DELAY_QUEUE, LOSS, PARTITION, Rule
from mesh.topology import Hosts, load

NETWORK = Network(Hosts.on(IPv4Network("10.99.0.0/24"), ("a", "b", "c"), "lb"), "t", "t")
A, B, C, LB = "10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5"


def rules_by_host(rules: list[Rule]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for rule in rules:
        found.setdefault(rule.host, []).append(" ".join(rule.argv()))
    return found


def test_the_default_network_names_namespaces_links_and_the_bridge() -> None:
    network = Network.of(load())
    assert network.namespace("host-1") == "shopmesh-host-1"
    assert network.veth("host-1") == "sm-host-1"
    assert network.bridge == "smbr"
    assert all(len(network.veth(name)) <= 15 for name in network.names)
    with pytest.raises(KeyError):
        network.namespace("elsewhere")


def test_a_partition_drops_on_arrival_in_both_directions() -> None:
    rules = netfaults.partition_rules(NETWORK, "a")
    assert {r.chain for r in rules} == {PARTITION}
    assert rules_by_host(rules) == {
        "b": [f"iptables -w -A {PARTITION} -s {A}/32 -m comment --comment cut a->b -j DROP"],
        "c": [f"iptables -w -A {PARTITION} -s {A}/32 -m comment --comment cut a->c -j DROP"],
        "lb": [f"iptables -w -A {PARTITION} -s {A}/32 -m comment --comment cut a->lb -j DROP"],
        "a": [
            f"iptables -w -A {PARTITION} -s {B}/32 -m comment --comment cut b->a -j DROP",
            f"iptables -w -A {PARTITION} -s {C}/32 -m comment --comment cut c->a -j DROP",
            f"iptables -w -A {PARTITION} -s {LB}/32 -m comment --comment cut lb->a -j DROP",
        ],
    }


def test_a_one_way_partition_from_one_peer_drops_only_what_the_host_sends_it() -> None:
    (rule,) = netfaults.partition_rules(NETWORK, "a", "b", one_way=True)
    assert rule.host == "b"
    assert rule.argv() == [
        "iptables", "-w", "-A", PARTITION, "-s", f"{A}/32",
        "-m", "comment", "--comment", "cut a->b", "-j", "DROP",
    ]  # fmt: skip
    both = netfaults.partition_rules(NETWORK, "a", "b")
    assert [(r.host, r.comment) for r in both] == [("b", "cut a->b"), ("a", "cut b->a")]


@pytest.mark.parametrize(("host", "peer"), [("x", None), ("a", "x"), ("a", "a")])
def test_a_partition_of_an_unknown_host_or_from_itself_is_refused(
    host: str, peer: str | None
) -> None:
    with pytest.raises(NetError):
        netfaults.partition_rules(NETWORK, host, peer)


def test_loss_drops_a_random_share_on_every_link_once() -> None:
    rules = netfaults.loss_rules(NETWORK, 30)
    assert len(rules) == 4 * 3  # every directed link, each dropped at its receiving end
    assert {(r.host, r.comment) for r in rules} == {
        (dst, f"loss 30% {src}->{dst}") for src, dst in netfaults.links(NETWORK)
    }
    b_from_a = next(r for r in rules if r.comment == "loss 30% a->b")
    assert b_from_a.argv() == [
        "iptables", "-w", "-A", LOSS, "-s", f"{A}/32",
        "-m", "statistic", "--mode", "random", "--probability", "0.30000",
        "-m", "comment", "--comment", "loss 30% a->b", "-j", "DROP",
    ]  # fmt: skip


def test_loss_on_one_host_is_on_its_links_both_ways() -> None:
    rules = netfaults.loss_rules(NETWORK, 2.5, "c")
    assert sorted(r.comment for r in rules) == [
        "loss 2.5% a->c", "loss 2.5% b->c", "loss 2.5% c->a", "loss 2.5% c->b",
        "loss 2.5% c->lb", "loss 2.5% lb->c",
    ]  # fmt: skip


@pytest.mark.parametrize("percent", [100, 0, -1, 150])
def test_loss_outside_0_to_100_exclusive_is_refused(percent: float) -> None:
    with pytest.raises(NetError, match="100 % is a partition"):
        netfaults.loss_rules(NETWORK, percent)


def test_delay_queues_each_packet_to_the_delayer_and_bypasses_when_none_listens() -> None:
    rules = netfaults.delay_rules(NETWORK, 50, 10, "a")
    assert {r.chain for r in rules} == {DELAY}
    a_from_b = next(r for r in rules if r.host == "a" and r.comment.endswith("b->a"))
    assert a_from_b.argv() == [
        "iptables", "-w", "-A", DELAY, "-s", f"{B}/32",
        "-m", "comment", "--comment", "delay 50±10ms b->a",
        "-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE), "--queue-bypass",
    ]  # fmt: skip
    assert len(rules) == 6


@pytest.mark.parametrize(("ms", "jitter"), [(0, 0), (-5, 0), (10, 11), (10, -1)])
def test_a_delay_that_is_not_one_is_refused(ms: int, jitter: int) -> None:
    with pytest.raises(NetError, match="delay needs"):
        netfaults.delay_rules(NETWORK, ms, jitter)


def test_the_chains_are_made_once_and_jumped_to_in_order_cut_then_loss_then_delay() -> None:
    assert netfaults.chain_commands(set(), set()) == [
        ["iptables", "-w", "-N", PARTITION],
        ["iptables", "-w", "-N", LOSS],
        ["iptables", "-w", "-N", DELAY],
        ["iptables", "-w", "-A", "INPUT", "-j", PARTITION],
        ["iptables", "-w", "-A", "INPUT", "-j", LOSS],
        ["iptables", "-w", "-A", "INPUT", "-j", DELAY],
    ]
    every = set(netfaults.CHAINS)
    assert netfaults.chain_commands(every, every) == []


def test_status_reads_each_faults_comment_and_packet_count_back() -> None:
    listing = "\n".join([
        "-N SHOPMESH-LOSS",
        f'-A {LOSS} -s {A}/32 -m statistic --mode random --probability 0.29999999981 '
        '-m comment --comment "loss 30% a->b" -c 12 840 -j DROP',
        f"-A {PARTITION} -s {A}/32 -m comment --comment cut-a -c 0 0 -j DROP",
        "-A INPUT -j SHOPMESH-LOSS -c 100 5000",
    ])  # fmt: skip
    assert netfaults.read_rules(listing) == [
        netfaults.Seen("loss 30% a->b", 12),
        netfaults.Seen("cut-a", 0),
    ]


def test_the_delayer_is_started_with_every_hosts_namespace_and_found_by_its_prefix() -> None:
    argv = netfaults.delayer_argv(NETWORK, 50, 10)
    assert argv[1:5] == ["-m", netfaults.DELAYER_MODULE, "--network", "t"]
    assert argv[-4:] == ["t-a", "t-b", "t-c", "t-lb"]
    assert argv[argv.index("--delay-ms") + 1] == "50"
    assert argv[argv.index("--jitter-ms") + 1] == "10"


def test_faults_and_hosts_need_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosts.os, "geteuid", lambda: 1000)
    with pytest.raises(NetError, match="needs root"):
        hosts.create(NETWORK)
    with pytest.raises(NetError, match="needs root"):
        netfaults.partition(NETWORK, "a")


# --- the delayer's netlink messages -----------------------------------------------------------


def test_a_verdict_accepts_one_packet_of_the_queue() -> None:
    message = delayer.verdict(86, 0x01020304)
    length, kind, flags = struct.unpack_from("=IHH", message)
    assert length == len(message) == 16 + 4 + 12
    assert kind == (delayer.NFNL_SUBSYS_QUEUE << 8) | delayer.NFQNL_MSG_VERDICT
    assert flags == delayer.NLM_F_REQUEST
    assert message[16:20] == bytes([0, 0, 0, 86])  # AF_UNSPEC, version 0, queue (big-endian)
    assert struct.unpack_from("=HH", message, 20) == (12, delayer.NFQA_VERDICT_HDR)
    assert struct.unpack_from("!II", message, 24) == (delayer.NF_ACCEPT, 0x01020304)


def test_binding_asks_for_metadata_only_and_fails_open_when_full() -> None:
    bind, params = delayer.bind_messages(86)
    assert struct.unpack_from("=H", bind, 6)[0] & delayer.NLM_F_ACK
    assert struct.pack("!BBH", delayer.NFQNL_CFG_CMD_BIND, 0, 0) in bind
    assert struct.pack("!IB", 0, delayer.NFQNL_COPY_META) in params
    assert struct.pack("!I", delayer.QUEUE_MAXLEN) in params


def test_a_queued_packets_id_is_read_from_its_header_among_other_attributes() -> None:
    header = struct.pack("!IHB", 77, 0x0800, 1)
    payload = (
        struct.pack("!BBH", 2, 0, 86)
        + delayer.attribute(9, b"\x00\x00\x00\x05")
        + delayer.attribute(delayer.NFQA_PACKET_HDR, header)
    )
    kind = (delayer.NFNL_SUBSYS_QUEUE << 8) | delayer.NFQNL_MSG_PACKET
    datagram = struct.pack("=IHHII", 16 + len(payload), kind, 0, 0, 0) + payload
    ((found_kind, found_payload),) = delayer.messages(datagram + datagram)[:1]
    assert found_kind == kind
    assert delayer.packet_id(found_payload) == 77
    assert len(delayer.messages(datagram + datagram)) == 2


def test_held_packets_go_in_the_order_their_time_comes() -> None:
    held = delayer.Delayer(86, delay_s=0.05, jitter_s=0.0)
    sent: list[bytes] = []

    class Queue:
        def send(self, data: bytes) -> None:
            sent.append(data)

    queue = Queue()
    for due, pid in [(3.0, 30), (1.0, 10), (2.0, 20)]:
        held.hold(due, pid, queue)  # type: ignore[arg-type]
    held.release(2.5)
    assert [struct.unpack_from("!I", m, 28)[0] for m in sent] == [10, 20]
    assert held.next_due() == 3.0


def test_the_net_commands_parse_as_documented() -> None:
    parser = build_parser()
    delay = parser.parse_args(["net", "delay", "50", "host-1", "--jitter", "10"])
    assert (delay.ms, delay.host, delay.jitter) == (50, "host-1", 10)
    assert parser.parse_args(["net", "delay", "50"]).host is None
    cut = parser.parse_args(["net", "partition", "host-1", "--from", "host-2", "--one-way"])
    assert (cut.host, cut.peer, cut.one_way) == ("host-1", "host-2", True)
    loss = parser.parse_args(["net", "loss", "2.5", "front"])
    assert (loss.percent, loss.host) == (2.5, "front")
