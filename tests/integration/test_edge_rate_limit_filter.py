"""The generated edge config in a real Envoy, in front of the real rate-limit service and Redis,
without the mesh: everything on free ports, the edge's upstreams stubbed (auth's JWKS and an
ext_authz that allows, services that answer 200), tokens signed by a key of the test's own. The
mesh-backed twin is tests/integration/test_rate_limits_through_edge.py; this one also covers
the rate-limit service going away."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from mesh.runtime import process, protos
from mesh.runtime.edge_config import EXTERNAL_AUDIENCE, EdgeFiles, envoy_config, issuer
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import ENVOY
from mesh.runtime.tls import edge_certs, ensure_edge_certs
from mesh.topology import RateLimit, Topology, Upstream, load
from tests.h3client import h3_get_with_headers
from tests.ratelimit_processes import binaries, free_port, on_free_ports, rate_limit_service

# Small, so the test is quick; the topology's own numbers are test_ratelimit_service.py's.
PER_USER = RateLimit(requests=12, per_seconds=60)
KID = "test-key"
PATH = "/notifications"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class _Signer:
    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_numbers()
        self.jwks = {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                               "n": _b64(public.n), "e": _b64(public.e)}]}  # fmt: skip


def _upstream_stub(jwks: dict) -> type[BaseHTTPRequestHandler]:
    """auth's JWKS; 200 for everything else (ext_authz allows, services answer)."""

    class Stub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(jwks if self.path == "/auth/jwks" else {"ok": True}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    return Stub


def _topology() -> Topology:
    """The committed topology with every port the edge config names moved to a free one."""
    base = load()
    edge = replace(
        base.edge,
        http_port=free_port(),
        https_port=free_port(udp_too=True),
        admin_port=free_port(),
        upstreams=tuple(Upstream(u.service, free_port()) for u in base.edge.upstreams),
        per_user_limit=PER_USER,
    )
    jaeger = replace(base.jaeger, ports=replace(base.jaeger.ports, otlp_grpc=free_port()))
    return on_free_ports(replace(base, edge=edge, jaeger=jaeger))


@dataclass
class Edge:
    topology: Topology
    state: StateDir
    signer: _Signer

    @property
    def cafile(self) -> str:
        return str(edge_certs(self.state).ca_cert)

    def token(self, sub: str) -> str:
        now = int(time.time())
        claims = {"iss": issuer(self.topology), "aud": EXTERNAL_AUDIENCE, "sub": sub,
                  "iat": now, "nbf": now, "exp": now + 600}  # fmt: skip
        return jwt.encode(claims, self.signer.pem, algorithm="RS256", headers={"kid": KID})

    def get(self, listener: str, sub: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        host, edge = self.topology.bind_host, self.topology.edge
        headers = {"authorization": f"Bearer {self.token(sub)}"} if sub else {}
        if listener == "h3":
            return h3_get_with_headers(host, edge.https_port, PATH, headers, self.cafile)
        if listener == "h2":
            verify = ssl.create_default_context(cafile=self.cafile)
            with httpx.Client(http2=True, verify=verify, timeout=5.0) as client:
                response = client.get(f"https://{host}:{edge.https_port}{PATH}", headers=headers)
        else:
            response = httpx.get(f"http://{host}:{edge.http_port}{PATH}", headers=headers)
        return response.status_code, response.headers.multi_items(), response.content


def _wait_live(admin: str, envoy: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and envoy.poll() is None:
        try:
            if httpx.get(f"{admin}/ready", timeout=1.0).text.strip() == "LIVE":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the edge Envoy did not come up:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    topology = _topology()
    state = StateDir(tmp_path_factory.mktemp("edge-state"))
    state.ensure()
    signer = _Signer()
    handler = _upstream_stub(signer.jwks)
    stubs = [ThreadingHTTPServer((topology.bind_host, u.local_bind_port), handler)
             for u in topology.edge.upstreams]  # fmt: skip
    for stub in stubs:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
    certs = ensure_edge_certs(state, topology.bind_host)
    protos.ensure_generated()
    files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET)
    config, log = state.config / "edge-envoy.json", state.logs / "edge.log"
    config.write_text(json.dumps(envoy_config(topology, files)))
    argv = [str(binaries(ENVOY)["envoy"]), "-c", str(config), "--disable-hot-restart",
            "--base-id", str(free_port()), "--log-level", "warn"]  # fmt: skip
    try:
        with rate_limit_service(topology, state), log.open("w") as out:
            envoy = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                _wait_live(f"http://{topology.bind_host}:{topology.edge.admin_port}", envoy, log)
                yield Edge(topology, state, signer)
            finally:
                envoy.terminate()
                envoy.wait(timeout=10)
    finally:
        for stub in stubs:
            stub.shutdown()


def ratelimit_headers(headers: list[tuple[str, str]]) -> Counter:
    return Counter(name.lower() for name, _ in headers if name.lower().startswith("x-ratelimit-"))


ONE_SET = Counter(["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"])


def test_one_user_has_one_budget_over_every_listener(edge: Edge) -> None:
    left = PER_USER.per_seconds - time.time() % PER_USER.per_seconds
    if left < 10:  # the service counts in fixed windows aligned to the clock
        time.sleep(left + 0.2)
    listeners = ["plain", "h2", "h3"]
    spent = [edge.get(listeners[i % 3], "flooder")[0] for i in range(PER_USER.requests)]
    refused = {name: edge.get(name, "flooder") for name in listeners}

    assert spent == [200] * PER_USER.requests
    for name, (status, headers, body) in refused.items():
        assert status == 429, name
        fields = {n.lower(): v for n, v in headers}
        assert fields["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 429
        assert ratelimit_headers(headers) == ONE_SET, (name, headers)
        assert fields["x-ratelimit-remaining"] == "0"
        assert fields["x-ratelimit-limit"].startswith(f"{PER_USER.requests}, ")
    status, headers, _ = edge.get("plain", "someone-else")
    assert status == 200
    assert ratelimit_headers(headers) == ONE_SET


def test_with_redis_or_the_rate_limit_service_down_requests_pass_unlimited(edge: Edge) -> None:
    """Fail open: an outage of the limiter must not take the API down."""
    for down in ("redis", "ratelimit"):
        assert process.stop(edge.state, down, timeout=5)
        started = time.monotonic()
        answers = [edge.get("plain", f"while-{down}-is-down") for _ in range(PER_USER.requests + 3)]
        took = time.monotonic() - started
        assert [status for status, _, _ in answers] == [200] * len(answers), down
        assert all(not ratelimit_headers(headers) for _, headers, _ in answers), down
        assert took < 5, f"{len(answers)} requests with {down} down took {took:.1f}s"
