"""The edge's overload manager in a real Envoy without the mesh (tests/edge_process.py), with a
heap limit below what an idle edge already holds: it takes no new connection, over TCP or QUIC
(whose listener nothing else bounds), and says so in its stats. An edge under its limit
answers on every listener: the other edge tests run under the committed limit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from mesh.envoy_memory import OVERLOAD_ACTIONS
from mesh.runtime import envoy_admin
from tests.edge_process import GENEROUS, Edge, running_edge
from tests.support import wait_for

# An idle edge holds several MB of heap: 1 MB puts it far past every threshold from the start.
TINY_HEAP_MB = 1
# How long a client waits for an answer the paused edge must not give.
UNANSWERED_S = 3.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge-state")
    with running_edge(root, GENEROUS, max_heap_mb=TINY_HEAP_MB) as running:
        yield running


def stats(edge: Edge) -> dict[str, int]:
    with envoy_admin.client(envoy_admin.socket_path(edge.state, "edge")) as admin:
        text = admin.get("/stats", params={"filter": "^overload\\."}).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            found[name] = int(value)
    return found


def all_active(edge: Edge) -> dict[str, int]:
    found = stats(edge)
    active = {a: found.get(f"overload.{a}.active", 0) for a, _ in OVERLOAD_ACTIONS}
    return found if all(active.values()) else {}


async def quic_handshake(host: str, port: int, cafile: str) -> bool:
    """Whether a QUIC handshake with the edge completes within UNANSWERED_S."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile)
    try:
        async with asyncio.timeout(UNANSWERED_S):
            async with connect(host, port, configuration=config):
                return True
    except TimeoutError:
        return False


def test_past_its_heap_limit_the_edge_reports_every_overload_action_active(edge: Edge) -> None:
    found = wait_for(lambda: all_active(edge), timeout=30, what="every overload action active")
    assert found["overload.envoy.resource_monitors.fixed_heap.pressure"] > 100


def test_past_its_heap_limit_the_edge_takes_no_new_tcp_connection(edge: Edge) -> None:
    wait_for(lambda: all_active(edge), timeout=30, what="every overload action active")
    host, (instance,) = edge.topology.bind_host, edge.topology.edge.instances

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"http://{host}:{instance.http_port}/notifications", timeout=UNANSWERED_S)


def test_past_its_heap_limit_the_edge_completes_no_new_quic_handshake(edge: Edge) -> None:
    wait_for(lambda: all_active(edge), timeout=30, what="every overload action active")
    host, port = edge.topology.bind_host, edge.topology.edge.https_port

    assert not asyncio.run(quic_handshake(host, port, edge.cafile))
