"""The L4 balancer in front of the edges (mesh/components/balancer.py): HAProxy's config from the
topology, checked by the pinned HAProxy itself, and what the edges do with its PROXY header."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from mesh.components import balancer
from mesh.components.edge import PROXY_PROTOCOL_FILTER, EdgeFiles, envoy_config
from mesh.placement import NativePlacement
from mesh.runtime import protos
from mesh.runtime.paths import cache_dir
from mesh.runtime.provision import HAPROXY
from mesh.topology import TOPOLOGY_FILE, TopologyError, load, parse

FILES = EdgeFiles(
    Path("/certs/edge.pem"),
    Path("/certs/edge-key.pem"),
    protos.DESCRIPTOR_SET,
    Path("/state/admin/edge-1.sock"),
)

# What HAProxy's `/stats;csv` answers (trimmed to the columns read, in HAProxy's order).
STATS_CSV = """# pxname,svname,scur,status,
stats,FRONTEND,1,OPEN,
edges-http,edge-1,3,UP,
edges-http,edge-2,0,DOWN,
edges-http,BACKEND,3,UP,
edges-https,edge-1,2,DRAIN,
edges-https,edge-2,0,UP 1/2,
edges-https,BACKEND,2,UP,
"""


def config_lines() -> list[str]:
    topology = load()
    return balancer.config(topology, NativePlacement.of(topology)).splitlines()


def test_the_balancer_owns_the_public_tcp_ports_and_hands_each_edge_its_own_with_proxy_v2() -> None:
    topology, lines = load(), config_lines()
    host = topology.bind_host
    assert f"  bind {host}:{topology.edge.http_port}" in lines
    assert f"  bind {host}:{topology.edge.https_port}" in lines
    assert f"  bind {host}:{topology.balancer_stats_port}" in lines
    for edge in topology.edge.instances:
        for own_port in (edge.http_port, edge.https_port):
            (server,) = [line for line in lines if f" {host}:{own_port} " in line]
            assert server.split()[:2] == ["server", edge.id]
            # The PROXY header to the edge, the health check on its /ready without one.
            assert "send-proxy-v2" in server
            assert f"check port {edge.metrics_port}" in server
    check = "  http-check send meth GET uri /ready ver HTTP/1.1 hdr host balancer"
    assert lines.count(check) == 2
    assert lines.count("  mode tcp") == 1  # the defaults: TLS ends at the edges


def test_the_pinned_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    if not HAPROXY.is_installed(cache_dir()):
        pytest.fail("HAProxy is not installed: run `mesh install` (make test does) first")
    haproxy = HAPROXY.binaries(cache_dir())["haproxy"]
    path = tmp_path / "haproxy.cfg"
    topology = load()
    path.write_text(balancer.config(topology, NativePlacement.of(topology)))
    proc = subprocess.run(
        [str(haproxy), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuration file is valid" in proc.stdout


def test_the_stats_csv_gives_each_edges_state_and_connections() -> None:
    assert balancer.server_states(STATS_CSV) == {
        ("edges-http", "edge-1"): "UP",
        ("edges-http", "edge-2"): "DOWN",
        ("edges-https", "edge-1"): "DRAIN",
        ("edges-https", "edge-2"): "UP 1/2",
    }
    assert balancer.sessions(STATS_CSV, "edge-1") == 5
    assert balancer.sessions(STATS_CSV, "edge-2") == 0


def test_every_edge_reads_the_proxy_header_on_tcp_and_binds_the_public_udp_port() -> None:
    topology = load()
    for edge in topology.edge.instances:
        config = envoy_config(topology, NativePlacement.of(topology), FILES, edge)
        listeners = {lis["name"]: lis for lis in config["static_resources"]["listeners"]}
        for name in ("http", "https"):
            assert listeners[name]["listener_filters"] == [PROXY_PROTOCOL_FILTER], name
        # A connection straight to an edge's own port, without the header, is taken as it is.
        assert PROXY_PROTOCOL_FILTER["typed_config"]["allow_requests_without_proxy_protocol"]
        quic = listeners["http3"]["address"]["socket_address"]
        assert (quic["protocol"], quic["port_value"]) == ("UDP", topology.edge.https_port)
        assert "listener_filters" not in listeners["http3"]


def test_edges_with_upstreams_to_other_services_are_refused() -> None:
    raw = yaml.safe_load(TOPOLOGY_FILE.read_text())
    raw = copy.deepcopy(raw)
    raw["edge"]["instances"][1]["upstreams"].pop("orders")
    with pytest.raises(TopologyError, match="edge instance edge-2: its upstreams"):
        parse(raw)


def test_two_edges_sharing_a_port_are_refused() -> None:
    raw = yaml.safe_load(TOPOLOGY_FILE.read_text())
    raw["edge"]["instances"][1]["metrics_port"] = raw["edge"]["instances"][0]["metrics_port"]
    with pytest.raises(
        TopologyError, match="is given to both 'edge-1 metrics' and 'edge-2 metrics'"
    ):
        parse(raw)
