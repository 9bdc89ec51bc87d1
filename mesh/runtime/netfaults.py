"""Faults between the hosts (`mesh net partition|loss|delay|kill|heal`): Jepsen's classes of
network fault, on the real kernel paths between the hosts' namespaces.

Every fault is on directed links (from one host to another) and done where a packet arrives:
a rule in the receiving host's INPUT path, matching the sender's address. So a sender sees
nothing locally (no EPERM from a rule on its own output, as a real network's loss gives none),
the root namespace (the CLI, the tests) still reaches every host, and a host's rules go with its
namespace. Three chains of our own, jumped to from INPUT in this order, one per kind, so one
kind is undone by flushing its chain and a packet is cut or dropped before it waits in a delay:

- SHOPMESH-PARTITION: DROP (partitions add up until `heal`),
- SHOPMESH-LOSS: DROP with `-m statistic --mode random` (one loss setting at a time),
- SHOPMESH-DELAY: NFQUEUE to the delayer (mesh/runtime/delayer.py; one delay at a time).

A link's fault is met once per packet: a loss of 30 % on host-1 drops 30 % of what host-1
sends to and receives from the other hosts; on every host (no HOST given) 30 % of every packet
between any two. Delay the same: each packet waits once, so a round trip grows by twice it.
Every rule carries a comment saying what it is, which is what `status` reads back.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mesh.runtime.hosts import (
    NetError,
    Network,
    alive,
    in_namespace,
    kill_processes,
    namespace_exists,
    remove,
    require_root,
    run,
)

PARTITION = "SHOPMESH-PARTITION"
LOSS = "SHOPMESH-LOSS"
DELAY = "SHOPMESH-DELAY"
CHAINS = (PARTITION, LOSS, DELAY)
# The NFQUEUE queue the delay rules send to, in each host (queues are per network namespace).
DELAY_QUEUE = 86
DELAYER_MODULE = "mesh.runtime.delayer"


@dataclass(frozen=True)
class Rule:
    """One iptables rule in the receiving host's chain."""

    host: str
    chain: str
    match: tuple[str, ...]
    target: tuple[str, ...]
    comment: str

    def argv(self) -> list[str]:
        return [
            "iptables", "-w", "-A", self.chain, *self.match,
            "-m", "comment", "--comment", self.comment, "-j", *self.target,
        ]  # fmt: skip


Link = tuple[str, str]


def links(network: Network, host: str | None = None) -> list[Link]:
    """Every directed link between two hosts, or those into and out of `host`."""
    names = network.names
    every = [(a, b) for a in names for b in names if a != b]
    return [link for link in every if host is None or host in link]


def _check_host(network: Network, *hosts: str | None) -> None:
    for host in hosts:
        if host is not None and host not in network.names:
            raise NetError(f"no host {host!r}: the hosts are {', '.join(network.names)}")


def partition_rules(
    network: Network, host: str, peer: str | None = None, one_way: bool = False
) -> list[Rule]:
    """`host` cut off from the other hosts (or from `peer` only); one way: what `host` sends
    them is lost, what they send it arrives."""
    _check_host(network, host, peer)
    if peer == host:
        raise NetError(f"a host cannot be partitioned from itself ({host})")
    peers = [peer] if peer else [name for name in network.names if name != host]
    cut = [(host, p) for p in peers] + ([] if one_way else [(p, host) for p in peers])
    return [
        Rule(dst, PARTITION, _from(network, src), ("DROP",), f"cut {src}->{dst}")
        for src, dst in cut
    ]


def loss_rules(network: Network, percent: float, host: str | None = None) -> list[Rule]:
    _check_host(network, host)
    if not 0 < percent < 100:
        raise NetError(
            f"loss is a share of packets between 0 and 100 (exclusive), got {percent}: "
            "100 % is a partition (`mesh net partition`), 0 is `mesh net loss 0` (none)"
        )
    probability = f"{percent / 100:.5f}"
    statistic = ("-m", "statistic", "--mode", "random", "--probability", probability)
    return [
        Rule(
            dst,
            LOSS,
            (*_from(network, src), *statistic),
            ("DROP",),
            f"loss {percent:g}% {src}->{dst}",
        )
        for src, dst in links(network, host)
    ]


def delay_rules(network: Network, ms: int, jitter_ms: int, host: str | None = None) -> list[Rule]:
    _check_host(network, host)
    if ms <= 0 or not 0 <= jitter_ms <= ms:
        raise NetError(
            f"delay needs MS > 0 and 0 <= jitter <= MS, got {ms} ± {jitter_ms} "
            "(`mesh net delay 0` removes the delay)"
        )
    # --queue-bypass: with no delayer listening (it was stopped), packets pass undelayed
    # instead of being dropped.
    target = ("NFQUEUE", "--queue-num", str(DELAY_QUEUE), "--queue-bypass")
    return [
        Rule(dst, DELAY, _from(network, src), target, f"delay {ms}±{jitter_ms}ms {src}->{dst}")
        for src, dst in links(network, host)
    ]


def _from(network: Network, host: str) -> tuple[str, ...]:
    return ("-s", f"{network.address(host)}/32")


def chain_commands(existing: set[str], jumps: set[str]) -> list[list[str]]:
    """The iptables commands that make our chains in a host and jump to them from INPUT, in
    CHAINS' order, given which exist and are jumped to already."""
    commands = [["iptables", "-w", "-N", chain] for chain in CHAINS if chain not in existing]
    commands += [
        ["iptables", "-w", "-A", "INPUT", "-j", chain] for chain in CHAINS if chain not in jumps
    ]
    return commands


def flush_commands(chains: Iterable[str]) -> list[list[str]]:
    return [["iptables", "-w", "-F", chain] for chain in chains]


# --- applying them ----------------------------------------------------------------------------


def _iptables(network: Network, host: str, argv: list[str]) -> str:
    namespace = network.namespace(host)
    if not namespace_exists(namespace):
        raise NetError(f"host {host} is not up ({namespace} does not exist): `mesh net up` first")
    return run(in_namespace(namespace, argv))


def _ensure_chains(network: Network) -> None:
    for host in network.names:
        rules = _iptables(network, host, ["iptables", "-w", "-S"]).splitlines()
        existing = {line.split()[1] for line in rules if line.startswith("-N ")}
        jumps = {line.split()[-1] for line in rules if line.startswith("-A INPUT -j ")}
        for command in chain_commands(existing, jumps):
            _iptables(network, host, command)


def _apply(network: Network, rules: list[Rule], replacing: str | None = None) -> None:
    require_root()
    _ensure_chains(network)
    if replacing:
        for host in network.names:
            for command in flush_commands([replacing]):
                _iptables(network, host, command)
    for rule in rules:
        _iptables(network, rule.host, rule.argv())


def partition(network: Network, host: str, peer: str | None = None, one_way: bool = False) -> None:
    _apply(network, partition_rules(network, host, peer, one_way))


def set_loss(network: Network, percent: float, host: str | None = None) -> None:
    """Packet loss on every link (or those of `host`), replacing any loss before; 0: none."""
    rules = [] if percent == 0 else loss_rules(network, percent, host)
    _apply(network, rules, replacing=LOSS)


def set_delay(network: Network, ms: int, jitter_ms: int = 0, host: str | None = None) -> None:
    """Each packet on every link (or those of `host`) waits ms ± jitter_ms, replacing any delay
    before; 0: none. The delayer starts before the rules, so no packet waits for nobody."""
    rules = [] if ms == 0 else delay_rules(network, ms, jitter_ms, host)
    stop_delayer(network)
    _apply(network, [], replacing=DELAY)
    if rules:
        start_delayer(network, ms, jitter_ms)
        _apply(network, rules)


def heal(network: Network) -> None:
    """Every partition, loss and delay removed (killed hosts stay killed)."""
    require_root()
    _ensure_chains(network)
    for host in network.names:
        for command in flush_commands(CHAINS):
            _iptables(network, host, command)
    stop_delayer(network)


def down(network: Network) -> dict[str, list[int]]:
    """The delayer stopped and the hosts removed, their rules with their namespaces: nothing
    of theirs is left. What was SIGKILLed in which host."""
    require_root()
    stop_delayer(network)
    killed = remove(network)
    shutil.rmtree(_runtime_dir(network))
    return killed


def kill_host(network: Network, host: str) -> list[int]:
    """SIGKILL every process in the host: the host is lost, as if its power went."""
    require_root()
    _check_host(network, host)
    namespace = network.namespace(host)
    if not namespace_exists(namespace):
        raise NetError(f"host {host} is not up ({namespace} does not exist)")
    return kill_processes(namespace)


@dataclass(frozen=True)
class Seen:
    """A fault's rule as the kernel has it: what it is, and how many packets it has taken."""

    comment: str
    packets: int


def read_rules(listing: str) -> list[Seen]:
    """Our rules in `iptables -S -v` output (the ones with a comment)."""
    seen = []
    for line in listing.splitlines():
        words = shlex.split(line)
        if "--comment" in words:
            packets = int(words[words.index("-c") + 1]) if "-c" in words else 0
            seen.append(Seen(words[words.index("--comment") + 1], packets))
    return seen


def active(network: Network) -> dict[str, list[Seen]]:
    """What is on, by receiving host, from the kernel's own tables."""
    on: dict[str, list[Seen]] = {}
    for host in network.names:
        if not namespace_exists(network.namespace(host)):
            continue
        if rules := read_rules(_iptables(network, host, ["iptables", "-w", "-S", "-v"])):
            on[host] = rules
    return on


# --- the delayer process ----------------------------------------------------------------------


def _runtime_dir(network: Network) -> Path:
    path = Path("/run") / f"{network.prefix}-net"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def delayer_argv(network: Network, ms: int, jitter_ms: int) -> list[str]:
    namespaces = [network.namespace(host) for host in network.names]
    return [
        sys.executable, "-m", DELAYER_MODULE, "--network", network.prefix,
        "--queue", str(DELAY_QUEUE), "--delay-ms", str(ms), "--jitter-ms", str(jitter_ms),
        *namespaces,
    ]  # fmt: skip


def delayer_pids(network: Network) -> list[int]:
    """The network's delayer, found by its command line (it runs in the root namespace)."""
    wanted = ["-m", DELAYER_MODULE, "--network", network.prefix]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if argv[1:5] == wanted:
            found.append(int(entry))
    return found


def start_delayer(network: Network, ms: int, jitter_ms: int, ready_s: float = 10.0) -> int:
    log = _runtime_dir(network) / "delayer.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            delayer_argv(network, ms, jitter_ms),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], ready_s)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise NetError(f"the delayer did not start ({log}):\n" + "\n".join(tail))
    return proc.pid


def _running(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped, if this process started it
    return alive(pid)


def stop_delayer(network: Network, deadline_s: float = 10.0) -> None:
    """SIGTERM: it lets every packet it holds go at once, then exits."""
    pids = delayer_pids(network)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    give_up = time.monotonic() + deadline_s
    while any(_running(pid) for pid in pids):
        if time.monotonic() > give_up:
            raise NetError(f"the delayer {pids} did not stop within {deadline_s} s")
        time.sleep(0.05)
