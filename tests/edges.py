"""Helpers for the tests of the two edges behind the balancer: what each edge counted, and the
balancer's own view of them."""

from __future__ import annotations

import httpx

from mesh.components import balancer
from mesh.runtime.supervisor import Mesh
from mesh.topology import EdgeInstance, Topology
from tests.support import envoy_admin

# The stat prefixes of the edge's listeners (mesh/components/edge.py, `_hcm`).
LISTENER_STATS = {"h1": "edge_http", "h2": "edge_https", "h3": "edge_http3"}


def requests_served(mesh: Mesh, edge: EdgeInstance, protocol: str) -> int:
    """The requests `edge` has taken on the listener of `protocol` (h1, h2, h3) since it started."""
    stat = f"http.{LISTENER_STATS[protocol]}.downstream_rq_total"
    with envoy_admin(mesh, edge.id) as admin:
        text = admin.get("/stats", params={"filter": f"^{stat}$"}).text
    (line,) = [line for line in text.splitlines() if line.startswith(f"{stat}:")]
    return int(line.rsplit(":", 1)[1])


def served_by_each(mesh: Mesh, protocol: str) -> dict[str, int]:
    return {e.id: requests_served(mesh, e, protocol) for e in mesh.topology.edge.instances}


def balancer_states(topology: Topology) -> dict[tuple[str, str], str]:
    """(backend, edge id) -> UP, DOWN, DRAIN, ... as HAProxy sees each edge now."""
    url = f"http://{topology.bind_host}:{topology.balancer_stats_port}{balancer.STATS_PATH};csv"
    return balancer.server_states(httpx.get(url, timeout=2.0).text)


def balancer_sees_up(topology: Topology, edge_id: str) -> bool:
    states = balancer_states(topology)
    return all(states[(backend, edge_id)] == "UP" for backend in balancer.BACKENDS.values())
