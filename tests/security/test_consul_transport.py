"""Consul's own traffic on the mesh's real cluster: gossip is encrypted with the cluster's key, RPC
between agents is TLS with a certificate of the cluster's CA at both ends, the client agent
serves xDS over TLS only, and every agent (the client agent and each server) its HTTP API over
HTTPS only. A rogue agent (the real consul binary, started here) is the attacker: without the key
it cannot join; with a stolen key but no certificate it joins the gossip and still cannot read the
catalog. Against the HTTPS API the attacker is a client: in plain HTTP, or trusting another CA."""

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

from mesh.components.consul_acl import OPERATOR
from mesh.placement import CONSUL
from mesh.runtime import consul as consul_runtime
from mesh.runtime import consul_acl
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import consul_ca, consul_certs, edge_certs
from tests.ratelimit_processes import free_port
from tests.support import api_answers_plain_http, operator_consul, wait_for

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
    with operator_consul(mesh, timeout=5) as consul:
        return {m["Name"] for m in consul.http.get("/v1/agent/members").json()}


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
    with operator_consul(mesh, timeout=5) as consul:
        ok = consul.http.get("/v1/catalog/services")
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


def agent_apis(mesh: Mesh) -> dict[str, str]:
    """Every agent's HTTPS API: the client agent's and each server's."""
    servers = {s.name: mesh.placement.consul_server_addr(s) for s in mesh.topology.consul_servers}
    return {CONSUL: mesh.topology.consul_http_addr, **servers}


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def test_no_agent_answers_its_api_in_plain_http(mesh: Mesh) -> None:
    for agent, addr in agent_apis(mesh).items():
        assert not api_answers_plain_http(addr), f"{agent} answered plain HTTP at {addr}"
        # The same read (it needs no token) over HTTPS is answered: only the transport refused.
        with httpx.Client(verify=trusting(consul_ca(mesh.state)), timeout=5) as client:
            assert client.get(f"{addr}/v1/status/leader").json(), agent


@pytest.mark.parametrize("trusted", ["the system's CAs", "the edge's CA"])
def test_a_client_that_does_not_trust_the_consul_ca_refuses_every_agent(
    mesh: Mesh, trusted: str
) -> None:
    context = (
        ssl.create_default_context()
        if trusted == "the system's CAs"
        else trusting(edge_certs(mesh.state).ca_cert)
    )
    with httpx.Client(verify=context, timeout=5) as client:
        for agent, addr in agent_apis(mesh).items():
            assert "CERTIFICATE_VERIFY_FAILED" in tls_refusal(client, addr), agent


def tls_refusal(client: httpx.Client, addr: str) -> str:
    """Why the connection to `addr` failed, or that it was answered."""
    try:
        resp = client.get(f"{addr}/v1/status/leader")
    except httpx.ConnectError as exc:
        return str(exc)
    return f"answered {resp.status_code}"


def test_with_the_consul_ca_every_agent_answers_yet_wants_a_token_for_what_acls_protect(
    mesh: Mesh,
) -> None:
    operator = {"X-Consul-Token": consul_acl.secret(mesh.state, OPERATOR)}
    with httpx.Client(verify=trusting(consul_ca(mesh.state)), timeout=5) as client:
        for agent, addr in agent_apis(mesh).items():
            anonymous = client.get(f"{addr}/v1/health/connect/orders")
            assert anonymous.status_code == 403, (agent, anonymous.text)
            signed_in = client.get(f"{addr}/v1/health/connect/orders", headers=operator)
            assert signed_in.status_code == 200 and signed_in.json(), (agent, signed_in.text)
