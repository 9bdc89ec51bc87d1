"""The L4 balancer in front of the edges: HAProxy's config, generated from the topology
(docs/gateway.md, "Two edges and the balancer").

HAProxy owns the edge's public TCP ports (`edge.http_port`, `edge.https_port`) and hands each
connection, as it is (TCP mode: TLS ends at the edge), to a healthy edge instance's own port,
opening it with a PROXY protocol v2 header that names the client, so the edge's per-address
rate limit and access log see the client, not the balancer. It checks every edge's `/ready`
(on the edge's metrics listener, which asks the edge's admin API) each second: an edge that is
dead, or draining (its health check failed on purpose, as `mesh stop` does), gets no new
connections; a connection refused by a dead edge is tried on another one (`redispatch`).
HTTP/3 does not go through it: HAProxy 2.6 cannot proxy UDP, so every edge binds the public
UDP port itself (SO_REUSEPORT).
"""

from __future__ import annotations

import csv
import io

from mesh.components import edge_metrics
from mesh.placement import BALANCER, Placement
from mesh.topology import Topology

NAME = BALANCER
# The backends of the two public ports, by the edge listener they reach.
BACKENDS = {"http": "edges-http", "https": "edges-https"}
STATS_PATH = "/stats"
# Each edge's readiness: 200 LIVE, or 503 once its health check failed (draining).
READY_PATH = edge_metrics.READY_PATH
METRICS_PATH = "/metrics"
# A check each second; two failures mark an edge down, two passes up again.
CHECK = "inter 1s fall 2 rise 2"
# WebSockets (/notifications/ws) live as long as clients want: an idle connection is closed
# after this long, as a client's own keep-alive would be long before.
IDLE_TIMEOUT = "1h"


def config(topology: Topology, placement: Placement) -> str:
    """haproxy.cfg for `placement` (native: every address the bind host)."""
    edge = topology.edge
    public = placement.listen(NAME)
    lines = [
        "global",
        # One thread: it only copies bytes; the edges behind it do the work.
        "  nbthread 1",
        "  log stdout format raw daemon notice",
        "",
        "defaults",
        "  mode tcp",
        "  log global",
        "  option tcplog",
        # Only failed or refused connections are logged, not every one.
        "  option dontlog-normal",
        "  timeout connect 1s",
        f"  timeout client {IDLE_TIMEOUT}",
        f"  timeout server {IDLE_TIMEOUT}",
        # A connection refused by a dead edge is tried again, on another edge.
        "  retries 2",
        "  option redispatch 1",
        "",
        "frontend stats",
        "  mode http",
        f"  bind {public}:{topology.balancer_stats_port}",
        "  option dontlog-normal",
        "  timeout client 10s",
        f"  http-request use-service prometheus-exporter if {{ path {METRICS_PATH} }}",
        "  stats enable",
        f"  stats uri {STATS_PATH}",
        "  stats refresh 5s",
    ]
    for listener, port in (("http", edge.http_port), ("https", edge.https_port)):
        backend = BACKENDS[listener]
        lines += [
            "",
            f"frontend edge-{listener}",
            f"  bind {public}:{port}",
            f"  default_backend {backend}",
            "",
            f"backend {backend}",
            # The edge with the fewest connections: WebSockets and HTTP/2 connections are long.
            "  balance leastconn",
            # HTTP/1.1: Envoy refuses HAProxy's default HTTP/1.0 with a 426.
            "  option httpchk",
            f"  http-check send meth GET uri {READY_PATH} ver HTTP/1.1 hdr host {NAME}",
            "  http-check expect status 200",
        ]
        for instance in edge.instances:
            own_port = instance.http_port if listener == "http" else instance.https_port
            address = placement.address(instance.id)
            lines.append(
                f"  server {instance.id} {address}:{own_port} send-proxy-v2 "
                f"check port {instance.metrics_port} {CHECK}"
            )
    return "\n".join(lines) + "\n"


def server_states(stats_csv: str) -> dict[tuple[str, str], str]:
    """(backend, edge id) -> the server's status in HAProxy's `/stats;csv`: UP, DOWN, MAINT,
    DRAIN, "UP 1/2" (going down), "DOWN 1/2" (coming up), ..."""
    rows = csv.DictReader(io.StringIO(stats_csv.lstrip("# ")))
    backends = set(BACKENDS.values())
    return {
        (row["pxname"], row["svname"]): row["status"]
        for row in rows
        if row["pxname"] in backends and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def sessions(stats_csv: str, edge_id: str) -> int:
    """The connections the balancer has open to `edge_id`, over both backends."""
    rows = csv.DictReader(io.StringIO(stats_csv.lstrip("# ")))
    backends = set(BACKENDS.values())
    return sum(int(r["scur"]) for r in rows if r["pxname"] in backends and r["svname"] == edge_id)
