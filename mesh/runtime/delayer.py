"""The delay of `mesh net delay`: netem's delay and jitter, done in user space, because this
kernel has no `sch_netem` (docs/hosts.md#latency-without-netem).

The hosts' SHOPMESH-DELAY rules send each delayed packet to an NFQUEUE queue; the kernel holds
the packet and hands this process its id (no payload: NFQNL_COPY_META). The process gives the
verdict ACCEPT when the packet's time is up: delay ± jitter, drawn uniformly for each packet,
as netem's jitter is by default (so, as with netem, jitter reorders packets). One process
serves every host: it runs in the root namespace, and makes one netlink socket in each host's
namespace (a queue belongs to the namespace its socket was made in), so killing a host leaves
the delay of the others alone. On SIGTERM it lets every packet it holds go at once and exits.

nfnetlink_queue's messages are spoken here directly over a netlink socket (struct layouts from
<linux/netfilter/nfnetlink_queue.h>): the three it needs are small, and the C library's Python
bindings would need a compiler.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

from mesh.runtime.hosts import socket_in

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NF_ACCEPT = 1
# Packets held at once per host; beyond that the kernel lets them through undelayed (fail open)
# rather than dropping them: a delay must not turn into loss.
QUEUE_MAXLEN = 8192
RECEIVE_BUFFER = 8 << 20
# <asm-generic/socket.h>; Python's socket module does not name it. Past rmem_max, as root.
SO_RCVBUFFORCE = 33
# <linux/netlink.h>: a full socket buffer is not reported as ENOBUFS on the next receive (the
# kernel lets the packets it could not hand over pass, the queue failing open).
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5


def attribute(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def message(kind: int, flags: int, queue: int, attributes: bytes, seq: int = 0) -> bytes:
    """A netlink message of nfnetlink_queue: header, nfgenmsg (AF_UNSPEC, version 0, the
    queue in network order), attributes."""
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attributes
    kind = (NFNL_SUBSYS_QUEUE << 8) | kind
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def bind_messages(queue: int) -> list[bytes]:
    return [
        message(NFQNL_MSG_CONFIG, NLM_F_ACK, queue,
                attribute(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)), 1),
        message(NFQNL_MSG_CONFIG, NLM_F_ACK, queue,
                attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                + attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN))
                + attribute(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                + attribute(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)), 2),
    ]  # fmt: skip


def verdict(queue: int, packet_id: int) -> bytes:
    return message(
        NFQNL_MSG_VERDICT,
        0,
        queue,
        attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
    )


def messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    found = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        found.append((kind, data[offset + 16 : offset + length]))
        offset += (length + 3) & ~3
    return found


def packet_id(payload: bytes) -> int | None:
    """The id in a queued packet's NFQA_PACKET_HDR (after the 4-byte nfgenmsg)."""
    offset = 4
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == NFQA_PACKET_HDR:
            (pid,) = struct.unpack_from("!I", payload, offset + 4)
            return int(pid)
        offset += (length + 3) & ~3
    return None


def open_queue(namespace: str, queue: int) -> socket.socket:
    sock = socket_in(namespace, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    sock.bind((0, 0))
    for request in bind_messages(queue):
        sock.send(request)
        for kind, payload in messages(sock.recv(65536)):
            if kind == NLMSG_ERROR and (error := struct.unpack_from("=i", payload)[0]) != 0:
                raise OSError(
                    -error, f"binding queue {queue} in {namespace}: {os.strerror(-error)}"
                )
    sock.setblocking(False)
    return sock


class Delayer:
    def __init__(self, queue: int, delay_s: float, jitter_s: float) -> None:
        self.queue = queue
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.held: list[tuple[float, int, int, socket.socket]] = []
        self.count = 0

    def take(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            for kind, payload in messages(data):
                if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    continue
                pid = packet_id(payload)
                if pid is None:
                    continue
                wait = self.delay_s + random.uniform(-self.jitter_s, self.jitter_s)
                self.hold(time.monotonic() + wait, pid, sock)

    def hold(self, due: float, pid: int, sock: socket.socket) -> None:
        self.count += 1
        heapq.heappush(self.held, (due, self.count, pid, sock))

    def release(self, until: float) -> None:
        while self.held and self.held[0][0] <= until:
            _, _, pid, sock = heapq.heappop(self.held)
            sock.send(verdict(self.queue, pid))

    def next_due(self) -> float | None:
        return self.held[0][0] if self.held else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.runtime.delayer", description=__doc__)
    parser.add_argument("--network", required=True, help="the hosts' prefix (to be found by)")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, required=True)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("namespaces", nargs="+")
    args = parser.parse_args(argv)
    delayer = Delayer(args.queue, args.delay_ms / 1000, args.jitter_ms / 1000)
    selector = selectors.DefaultSelector()
    for namespace in args.namespaces:
        selector.register(open_queue(namespace, args.queue), selectors.EVENT_READ)
    # A signal wakes the select below through this pair (Python would resume the select).
    wakeup, wakeup_writer = socket.socketpair()
    wakeup_writer.setblocking(False)
    signal.set_wakeup_fd(wakeup_writer.fileno())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    selector.register(wakeup, selectors.EVENT_READ)
    print("ready", flush=True)
    # Whoever waited for `ready` has closed the pipe: nothing more goes to it.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    while True:
        due = delayer.next_due()
        timeout = None if due is None else max(0.0, due - time.monotonic())
        ready = [key.fileobj for key, _ in selector.select(timeout)]
        if wakeup in ready:
            break
        for sock in ready:
            assert isinstance(sock, socket.socket)
            delayer.take(sock)
        delayer.release(time.monotonic())
    delayer.release(float("inf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
