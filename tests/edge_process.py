"""The generated edge config in a real Envoy without the mesh: everything on free ports, the
real rate-limit service and Redis, the edge's upstreams stubbed (auth's JWKS and token exchange,
services that answer 200), tokens signed by a key of the test's own. Used by
tests/integration/test_edge_rate_limit_filter.py, test_edge_token_exchange.py,
test_edge_token_refresh.py and test_edge_admission.py."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from mesh.components.edge import (
    EXTERNAL_AUDIENCE,
    HTTP_OPTIONS_EXTENSION,
    EdgeFiles,
    cluster_name,
    envoy_config,
    issuer,
)
from mesh.placement import NativePlacement
from mesh.runtime import envoy_admin, protos
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import ENVOY
from mesh.runtime.tls import edge_certs, ensure_edge_certs
from mesh.topology import Admission, RateLimit, TokenCache, Topology, Upstream, load
from tests.h3client import h3_get_with_headers
from tests.ratelimit_processes import binaries, free_port, on_free_ports, rate_limit_service

PATH = "/notifications"
# A per-user limit no test of the edge's other filters comes near.
GENEROUS = RateLimit(requests=10_000, per_seconds=60)
KID = "test-key"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Signer:
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


class Upstreams:
    """What the edge's sidecar upstreams answer, stubbed: auth's JWKS, auth's token exchange
    (every call counted; `refuse` makes it answer that status with a problem; `max_age` is its
    Cache-Control; `delay_s` holds each answer that long; the token's subject in X-Subject),
    auth's list of users blocked lately (`blocked`; every call counted; its list is whole since
    the stub started and, with `blocks_current`, current up to now), and services that answer
    200 with the Authorization they were given (each call counted; `service_delay_s` holds each
    answer that long)."""

    def __init__(self, jwks: dict) -> None:
        self.jwks = jwks
        self.exchanges: list[str] = []
        self.refuse: int | None = None
        self.max_age = 30
        self.delay_s = 0.0
        self.service_calls: list[str] = []
        self.service_delay_s = 0.0
        self.started_at = time.time()
        self.blocked: list[str] = []
        self.blocks_current = False
        self.blocks_asked = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstreams = self

        class Stub(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/auth/jwks":
                    self.answer(200, upstreams.jwks)
                elif self.path.startswith("/auth/ext-authz/"):
                    self.exchange()
                elif self.path == "/auth/blocks":
                    self.blocks()
                else:
                    upstreams.service_calls.append(self.path)
                    time.sleep(upstreams.service_delay_s)
                    self.answer(200, {"authorization": self.headers.get("authorization")})

            do_POST = do_GET

            def exchange(self) -> None:
                external = self.headers.get("authorization", "")
                upstreams.exchanges.append(external)
                time.sleep(upstreams.delay_s)
                if upstreams.refuse is not None:
                    problem = {"type": "/problems/user-blocked", "title": "User blocked",
                               "status": upstreams.refuse}  # fmt: skip
                    self.answer(upstreams.refuse, problem, "application/problem+json")
                    return
                internal = f"Bearer internal-{len(external)}-{external[-12:]}"
                claims = jwt.get_unverified_claims(external.removeprefix("Bearer "))
                self.answer(200, None, headers={"authorization": internal,
                            "cache-control": f"private, max-age={upstreams.max_age}",
                            "x-subject": claims["sub"]})  # fmt: skip

            def blocks(self) -> None:
                upstreams.blocks_asked += 1
                headers = {"x-blocks-complete-from": f"{upstreams.started_at:.3f}"}
                if upstreams.blocks_current:
                    headers["x-blocks-current-at"] = f"{time.time():.3f}"
                body = "".join(f"{user}\n" for user in upstreams.blocked).encode()
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer(self, status: int, document: object, content_type: str = "application/json",
                       headers: dict[str, str] | None = None) -> None:  # fmt: skip
                body = b"" if document is None else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("content-type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Stub


def edge_topology(
    per_user: RateLimit,
    token_cache: TokenCache | None = None,
    admission: Admission | None = None,
    max_heap_mb: int | None = None,
) -> Topology:
    """The committed topology with one edge instance, and every port its config names moved to
    a free one."""
    base = load()
    instance = replace(
        base.edge.instances[0],
        http_port=free_port(),
        https_port=free_port(),
        metrics_port=free_port(),
        upstreams=tuple(Upstream(u.service, free_port()) for u in base.edge.instances[0].upstreams),
    )
    edge = replace(
        base.edge,
        token_cache=token_cache or base.edge.token_cache,
        admission=admission or base.edge.admission,
        max_heap_mb=max_heap_mb or base.edge.max_heap_mb,
        https_port=free_port(udp_too=True),
        instances=(instance,),
        per_user_limit=per_user,
    )
    jaeger = replace(base.jaeger, ports=replace(base.jaeger.ports, otlp_grpc=free_port()))
    return on_free_ports(replace(base, edge=edge, jaeger=jaeger))


@dataclass
class Edge:
    topology: Topology
    state: StateDir
    signer: Signer
    upstreams: Upstreams

    @property
    def cafile(self) -> str:
        return str(edge_certs(self.state).ca_cert)

    def exchanged(self, token: str) -> int:
        """How many times auth's token exchange was asked for `token`."""
        return self.upstreams.exchanges.count(f"Bearer {token}")

    def token(self, sub: str) -> str:
        now = int(time.time())
        iss = issuer(self.topology, NativePlacement.of(self.topology))
        claims = {"iss": iss, "aud": EXTERNAL_AUDIENCE, "sub": sub,
                  "iat": now, "nbf": now, "exp": now + 600}  # fmt: skip
        return jwt.encode(claims, self.signer.pem, algorithm="RS256", headers={"kid": KID})

    def get(
        self, listener: str, sub: str | None, *, token: str | None = None, path: str = PATH
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """GET `path` on a listener (plain, h2, h3) as `sub` (a fresh token) or with `token`."""
        host, (edge,) = self.topology.bind_host, self.topology.edge.instances
        token = token or (self.token(sub) if sub else None)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if listener == "h3":
            public = self.topology.edge.https_port
            return h3_get_with_headers(host, public, path, headers, self.cafile)
        if listener == "h2":
            verify = ssl.create_default_context(cafile=self.cafile)
            with httpx.Client(http2=True, verify=verify, timeout=5.0) as client:
                response = client.get(f"https://{host}:{edge.https_port}{path}", headers=headers)
        else:
            response = httpx.get(f"http://{host}:{edge.http_port}{path}", headers=headers)
        return response.status_code, response.headers.multi_items(), response.content


def wait_live(admin_socket: Path, envoy: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and envoy.poll() is None:
        try:
            with envoy_admin.client(admin_socket, timeout=1.0) as admin:
                if admin.get("/ready").text.strip() == "LIVE":
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the edge Envoy did not come up:\n{log.read_text()[-3000:]}")


def to_http1_stubs(config: dict[str, Any], upstreams: tuple[Upstream, ...]) -> dict[str, Any]:
    """`config` with its clusters of the sidecar's upstreams speaking HTTP/1.1, which the stubs
    (http.server) speak; the edge speaks HTTP/2 to a real sidecar for most of them, checked in
    tests/unit/test_edge_config.py and, on the mesh, tests/integration/test_edge_sidecar_pools.py.
    Nothing else of the config changes."""
    stubbed = {cluster_name(u.service) for u in upstreams}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in stubbed:
            options = cluster["typed_extension_protocol_options"][HTTP_OPTIONS_EXTENSION]
            options["explicit_http_config"] = {"http_protocol_options": {}}
    return config


@contextmanager
def running_edge(
    root: Path,
    per_user: RateLimit,
    token_cache: TokenCache | None = None,
    admission: Admission | None = None,
    max_heap_mb: int | None = None,
) -> Iterator[Edge]:
    """The generated edge config in a real Envoy on free ports, with the real rate-limit
    service and Redis, in front of stubbed upstreams."""
    topology = edge_topology(per_user, token_cache, admission, max_heap_mb)
    state = StateDir(root)
    state.ensure()
    signer = Signer()
    upstreams = Upstreams(signer.jwks)
    handler = upstreams.handler()
    (edge,) = topology.edge.instances
    stubs = [ThreadingHTTPServer((topology.bind_host, u.local_bind_port), handler)
             for u in edge.upstreams]  # fmt: skip
    for stub in stubs:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
    certs = ensure_edge_certs(state, topology.bind_host)
    protos.ensure_generated()
    admin_socket = envoy_admin.prepare(state, "edge")
    files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET, admin_socket)
    config, log = state.config / "edge-envoy.json", state.logs / "edge.log"
    generated = envoy_config(topology, NativePlacement.of(topology), files, edge)
    config.write_text(json.dumps(to_http1_stubs(generated, edge.upstreams)))
    argv = [str(binaries(ENVOY)["envoy"]), "-c", str(config), "--disable-hot-restart",
            "--base-id", str(free_port()), "--log-level", "warn",
            # One worker: the token cache is per worker, and tests count auth's calls.
            "--concurrency", "1"]  # fmt: skip
    try:
        with rate_limit_service(topology, state), log.open("w") as out:
            envoy = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_live(admin_socket, envoy, log)
                yield Edge(topology, state, signer, upstreams)
            finally:
                envoy.terminate()
                envoy.wait(timeout=10)
                envoy_admin.remove(state)
    finally:
        for stub in stubs:
            stub.shutdown()
