"""Consul's own traffic on the mesh's real cluster: gossip is encrypted with the cluster's key, RPC
between agents is TLS with a certificate of the cluster's CA at both ends, and the client agent
serves xDS over TLS only. A rogue agent (the real consul binary, started here) is the attacker:
without the key it cannot join; with a stolen key but no certificate it joins the gossip and
still cannot read the catalog."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mesh.placement import CONSUL
from mesh.runtime import consul as consul_runtime
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import consul_certs
from tests.ratelimit_processes import free_port
from tests.support import wait_for

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TLS_ALERT = 0x15


@dataclass
class RogueAgent:
    http: str
    consul_bin: Path
    node: str

    def join(self, address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.consul_bin), "join", f"-http-addr={self.http}", address],
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture
def rogue(mesh: Mesh, tmp_path: Path) -> Iterator[Callable[[dict[str, object]], RogueAgent]]:
    """Starts rogue client agents (with the extra config given), each left and stopped after."""
    consul_bin = Path(mesh.binaries["consul"]["consul"])
    started: list[tuple[subprocess.Popen[bytes], RogueAgent]] = []

    def start(extra: dict[str, object]) -> RogueAgent:
        node = f"rogue-{uuid.uuid4().hex[:8]}"
        http, serf = free_port(), free_port()
        config = {
            "node_name": node,
            "datacenter": mesh.topology.datacenter,
            "data_dir": str(tmp_path / node),
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "ports": {"http": http, "serf_lan": serf, "dns": -1, "grpc": -1, "serf_wan": -1},
            **extra,
        }
        config_file = tmp_path / f"{node}.json"
        config_file.write_text(json.dumps(config))
        proc = subprocess.Popen(
            [str(consul_bin), "agent", f"-config-file={config_file}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        agent = RogueAgent(f"http://127.0.0.1:{http}", consul_bin, node)
        started.append((proc, agent))
        wait_for(
            lambda: httpx.get(f"{agent.http}/v1/agent/self", timeout=1).status_code == 200,
            timeout=30,
            what=f"the rogue agent {node} to answer",
        )
        return agent

    yield start
    for proc, agent in started:
        subprocess.run(
            [str(consul_bin), "leave", f"-http-addr={agent.http}"],
            capture_output=True,
            timeout=30,
        )
        proc.terminate()
        proc.wait(timeout=30)


def server_serf(mesh: Mesh) -> str:
    server = mesh.topology.consul_servers[0]
    return f"{mesh.placement.host(server.name)}:{server.serf_lan}"


def members(mesh: Mesh) -> set[str]:
    resp = httpx.get(f"{mesh.topology.consul_http_addr}/v1/agent/members", timeout=5)
    return {m["Name"] for m in resp.json()}


def test_an_agent_without_the_gossip_key_cannot_join(mesh: Mesh, rogue) -> None:
    agent = rogue({})
    joined = agent.join(server_serf(mesh))
    assert joined.returncode != 0, joined.stdout
    assert "encrypt" in joined.stderr.lower(), joined.stderr
    assert agent.node not in members(mesh)


def test_an_agent_with_a_stolen_gossip_key_but_no_certificate_reads_nothing(
    mesh: Mesh, rogue
) -> None:
    key_file = consul_runtime.gossip_key_file(mesh.state)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    agent = rogue(json.loads(key_file.read_text()))
    joined = agent.join(server_serf(mesh))
    assert joined.returncode == 0, joined.stderr

    def knows_a_live_server() -> bool:
        listed = httpx.get(f"{agent.http}/v1/agent/members", timeout=5).json()
        return any(m["Tags"].get("role") == "consul" and m["Status"] == 1 for m in listed)

    wait_for(knows_a_live_server, timeout=30, what="the rogue agent to see a server")
    resp = httpx.get(f"{agent.http}/v1/catalog/services", timeout=30)
    assert resp.status_code == 500, resp.text
    assert "No known Consul servers" not in resp.text, resp.text
    # What the real agent reads through the same servers, over TLS.
    ok = httpx.get(f"{mesh.topology.consul_http_addr}/v1/catalog/services", timeout=5)
    assert ok.status_code == 200 and "orders" in ok.json()


def test_the_agent_serves_xds_over_tls_only(mesh: Mesh) -> None:
    host = mesh.placement.host(CONSUL)
    port = mesh.topology.consul_ports.grpc
    with socket.create_connection((host, port), timeout=5) as plain:
        plain.sendall(HTTP2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        answer = plain.recv(64)
    # A TLS listener answers plaintext with an alert or by closing, never with HTTP/2 frames.
    assert answer == b"" or answer[0] == TLS_ALERT, answer

    context = ssl.create_default_context(cafile=str(consul_certs(mesh.state, CONSUL).ca_cert))
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=mesh.placement.address(CONSUL)) as tls,
    ):
        names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
        assert f"client.{mesh.topology.datacenter}.consul" in names
