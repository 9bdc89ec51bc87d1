"""The hosts of the hosts placement, made real on this machine (`mesh net up|down|status`): a
network namespace per host, a bridge in the root namespace, a veth pair from each host into it.

The bridge holds the topology's gateway address, so the root namespace (the `mesh` CLI, the
tests) reaches every host over the bridge's own route; the hosts reach each other and the root
namespace's gateway address, and nothing beyond: they have no default route. Everything made is
named by a `Network` (namespaces `<prefix>-<host>`, links `<links>br` and `<links>-<host>`) and
nothing else is touched: a link of one of those names that is not of the kind made here is
refused, not replaced. docs/hosts.md has the picture.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import TypeVar

from mesh.topology import Hosts, Topology

NETNS_DIR = Path("/run/netns")
# The host's end of its veth pair, inside its namespace.
HOST_LINK = "eth0"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class NetError(RuntimeError):
    """The hosts or a fault could not be made or removed; the message says why."""


@dataclass(frozen=True)
class Network:
    """One set of hosts and the names of everything made for it. The default names are the
    ones `mesh net` uses; tests make their own (another prefix, links and subnet) so they never
    meet a user's hosts."""

    hosts: Hosts
    prefix: str = "shopmesh"
    links: str = "sm"

    @classmethod
    def of(cls, topology: Topology) -> Network:
        return cls(topology.hosts)

    def namespace(self, host: str) -> str:
        self.hosts.host(host)
        return f"{self.prefix}-{host}"

    @property
    def bridge(self) -> str:
        return f"{self.links}br"

    def veth(self, host: str) -> str:
        """The root namespace's end of the host's veth pair."""
        return f"{self.links}-{host}"

    def address(self, host: str) -> str:
        return self.hosts.host(host).address

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.hosts.all]


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetError(
            "hosts are network namespaces, bridges and veth links: making or changing them "
            "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run `mesh net` as root"
        )


def run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise NetError(f"{argv[0]} is not installed (`mesh install` provisions it)") from None
    if proc.returncode != 0:
        raise NetError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def in_namespace(namespace: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def namespace_exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


def _link_kind(name: str, namespace: str | None = None) -> str | None:
    """The kind of a link (`bridge`, `veth`, '' for a plain one), None if there is none."""
    where = ["-n", namespace] if namespace else []
    proc = subprocess.run(
        ["ip", *where, "-j", "-d", "link", "show", "dev", name], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return None
    (link,) = json.loads(proc.stdout)
    return str(link.get("linkinfo", {}).get("info_kind", ""))


def _expect_kind(name: str, kind: str) -> bool:
    """Whether our link exists; refuses one of our names that is not what we make."""
    found = _link_kind(name)
    if found is not None and found != kind:
        raise NetError(f"a link named {name} exists and is no {kind}: not ours, left alone")
    return found is not None


def _check_subnet_is_free(network: Network) -> None:
    routes = json.loads(run(["ip", "-4", "-j", "route", "show", "table", "all"]))
    for route in routes:
        dst = route.get("dst", "")
        if route.get("dev") == network.bridge or dst in ("default", "") or "type" in route:
            continue
        try:
            other = ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if isinstance(other, IPv4Network) and other.overlaps(network.hosts.subnet):
            raise NetError(
                f"the hosts' subnet {network.hosts.subnet} overlaps the route to {dst} on "
                f"{route.get('dev')}: give the hosts another subnet (mesh/topology.yaml hosts)"
            )


def create(network: Network) -> None:
    """Make the bridge and every host; what exists already is kept (create twice is fine)."""
    require_root()
    _check_subnet_is_free(network)
    prefix_len = network.hosts.subnet.prefixlen
    if not _expect_kind(network.bridge, "bridge"):
        run(["ip", "link", "add", network.bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{network.hosts.gateway}/{prefix_len}", "dev", network.bridge])
    run(["ip", "link", "set", network.bridge, "up"])
    for host in network.names:
        namespace, veth = network.namespace(host), network.veth(host)
        if not namespace_exists(namespace):
            run(["ip", "netns", "add", namespace])
        if not _expect_kind(veth, "veth"):
            # No root end means no pair of ours (a veth pair goes as a whole): an eth0 already
            # in the namespace is someone else's.
            if _link_kind(HOST_LINK, namespace) is not None:
                raise NetError(f"{namespace} has a {HOST_LINK} that is not ours: left alone")
            run(["ip", "link", "add", veth, "type", "veth", "peer", HOST_LINK, "netns", namespace])
        run(["ip", "link", "set", veth, "master", network.bridge, "up"])
        address = f"{network.address(host)}/{prefix_len}"
        run(["ip", "-n", namespace, "addr", "replace", address, "dev", HOST_LINK])
        run(["ip", "-n", namespace, "link", "set", HOST_LINK, "up"])
        run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        # The faults filter IPv4 only: no IPv6 between hosts to go round them.
        run(in_namespace(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]))


def remove(network: Network) -> dict[str, list[int]]:
    """Remove every host and the bridge: processes still in a host are SIGKILLed first (which
    pids, by host, is returned). Removing what is not there is fine."""
    require_root()
    killed = {}
    for host in network.names:
        namespace, veth = network.namespace(host), network.veth(host)
        if namespace_exists(namespace):
            killed[host] = kill_processes(namespace)
        if _expect_kind(veth, "veth"):
            run(["ip", "link", "del", veth])
        if namespace_exists(namespace):
            run(["ip", "netns", "del", namespace])
    if _expect_kind(network.bridge, "bridge"):
        run(["ip", "link", "del", network.bridge])
    return {host: pids for host, pids in killed.items() if pids}


@dataclass(frozen=True)
class HostState:
    name: str
    namespace: str
    address: str
    # The addresses its eth0 has, and whether it is up: what the kernel says, not the topology.
    addresses: tuple[str, ...]
    up: bool
    processes: int


def states(network: Network) -> list[HostState]:
    found = []
    for host in network.names:
        namespace = network.namespace(host)
        addresses: tuple[str, ...] = ()
        up = False
        if namespace_exists(namespace) and _link_kind(HOST_LINK, namespace) is not None:
            (link,) = json.loads(run(["ip", "-n", namespace, "-j", "addr", "show", HOST_LINK]))
            addresses = tuple(a["local"] for a in link["addr_info"] if a["family"] == "inet")
            up = "UP" in link["flags"]
        processes = len(processes_in(namespace)) if namespace_exists(namespace) else 0
        found.append(HostState(host, namespace, network.address(host), addresses, up, processes))
    return found


# --- processes in a host -------------------------------------------------------------------


def _namespace_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return None
    return st.st_dev, st.st_ino


def processes_in(namespace: str) -> list[int]:
    """Every process whose network namespace is the host's (/proc/<pid>/ns/net)."""
    wanted = _namespace_id(NETNS_DIR / namespace)
    if wanted is None:
        return []
    pids = (int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    return [pid for pid in pids if _namespace_id(Path(f"/proc/{pid}/ns/net")) == wanted]


def kill_processes(namespace: str, deadline_s: float = 10.0) -> list[int]:
    """SIGKILL every process in the host until none is left (one may fork meanwhile)."""
    killed: list[int] = []
    give_up = time.monotonic() + deadline_s
    while pids := [pid for pid in processes_in(namespace) if alive(pid)]:
        if time.monotonic() > give_up:
            raise NetError(f"processes {pids} in {namespace} outlived SIGKILL for {deadline_s} s")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.05)
    return killed


def alive(pid: int) -> bool:
    """Not a zombie: a killed child stays listed until its parent reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- sockets in a host ----------------------------------------------------------------------


def _enter(namespace: str) -> None:
    """Move the calling thread into the host's network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetError(f"cannot enter {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def call_in(namespace: str, call: Callable[[], T]) -> T:
    """`call()` run in the host's network namespace: by a short-lived thread that entered it,
    so no thread of ours stays there. What it makes there stays there: a socket (reachable
    from here), a child process (it inherits the thread's namespace)."""
    made: list[T] = []
    failed: list[BaseException] = []

    def run_there() -> None:
        try:
            _enter(namespace)
            made.append(call())
        except BaseException as exc:  # handed over to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run_there, name=f"enter-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def socket_in(
    namespace: str, family: socket.AddressFamily, kind: socket.SocketKind, proto: int = 0
) -> socket.socket:
    """A socket of the host's network namespace, usable from this one."""
    return call_in(namespace, lambda: socket.socket(family, kind, proto))
