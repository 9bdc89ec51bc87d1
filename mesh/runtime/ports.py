"""Free loopback ports for processes started next to a mesh (tests, the scratch Kubernetes
cluster), taken from outside the kernel's ephemeral range.

A port the kernel picks for `bind(("127.0.0.1", 0))` comes from the ephemeral range, the same
range every outgoing connection's local port comes from. Between closing the probe socket and
the process binding the port, any client on the machine may take it (a CI run saw Lyft's
ratelimit die with "address already in use" that way). Above that range, only a listener that
asked for the very port can."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Every port the topology names is below this; the ports handed out stay clear of them.
LOWEST = 30_000
HIGHEST = 65_535
# Below this many ports above the ephemeral range, the ports below it are used instead.
ENOUGH = 1_000

_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    low, high = EPHEMERAL_RANGE_FILE.read_text().split()
    return int(low), int(high)


def candidates(ephemeral: tuple[int, int]) -> range:
    """The ports outside the ephemeral range to pick from: above it, or below it if too few."""
    low, high = ephemeral
    above = range(high + 1, HIGHEST + 1)
    if len(above) >= ENOUGH:
        return above
    below = range(LOWEST, low)
    if len(below) >= ENOUGH:
        return below
    raise RuntimeError(
        f"the ephemeral port range {low}-{high} ({EPHEMERAL_RANGE_FILE}) leaves fewer than "
        f"{ENOUGH} ports between {LOWEST} and {HIGHEST} outside it: narrow it with "
        f"`sysctl net.ipv4.ip_local_port_range='32768 60999'`"
    )


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, udp_too: bool = False) -> int:
    """A loopback port outside the ephemeral range that nothing listens on (on UDP as well, if
    asked: a QUIC listener's), never the same twice in one process."""
    pool = candidates(_ephemeral_range())
    for port in random.sample(pool, len(pool)):
        if port in _handed_out or not _bindable(port, socket.SOCK_STREAM):
            continue
        if udp_too and not _bindable(port, socket.SOCK_DGRAM):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port left in {pool.start}-{pool.stop - 1}")
