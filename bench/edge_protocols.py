"""HTTP/1.1, HTTP/2 and HTTP/3 through the edge, and gRPC with and without the sidecars.

Runs against the native mesh (start it with `mesh up -d`; the state dir is the CLI's,
`SHOPMESH_STATE_DIR`). Writes the figures and this command to docs/benchmarks.md.

    .venv/bin/python -m bench.edge_protocols [--requests 400] [--concurrency 50]

Edge: `GET /openapi/orders.yaml` over the TLS listener (h1, h2) and the QUIC listener (h3). The
route needs no token, so the per-user rate limit (100/min) does not cap the run, yet the request
crosses the whole mesh path: edge → edge sidecar → mTLS → orders sidecar → orders. Three figures
per protocol: latency of sequential requests on one warm connection; throughput of `concurrency`
requests in flight on ONE connection (HTTP/1.1 can only queue them, h2 and h3 multiplex); the
first answer on a fresh connection (TCP + TLS 1.3 handshakes, or QUIC's).

Mesh: `users.GetUser` over gRPC, straight to the users port, and through a sidecar pair (the
orders sidecar's users upstream: two Envoys and mTLS), as the admin's internal JWT.

The client is Python (httpx, aioquic, grpcio) on the same 2-core machine as the mesh, so the
figures include its own cost: compare the rows, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from aioquic.asyncio import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from mesh.runtime.demo import token
from mesh.runtime.edge_config import issuer
from mesh.runtime.paths import StateDir
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology, load
from shopmesh.users.v1 import users_pb2, users_pb2_grpc
from tests.h3client import _Client as H3Client

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Edge protocols and the mesh hop"
PATH = "/openapi/orders.yaml"
COLD_CONNECTIONS = 20

Request = Callable[[], Awaitable[int]]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def sequential(request: Request, n: int) -> dict:
    latencies, failures = [], 0
    for _ in range(n):
        started = time.perf_counter()
        failures += await request() != 200
        latencies.append(time.perf_counter() - started)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "failures": failures,
    }


async def concurrent(request: Request, n: int, concurrency: int) -> dict:
    statuses: list[int] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            statuses.append(await request())

    started = time.perf_counter()
    share, extra = divmod(n, concurrency)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
    took = time.perf_counter() - started
    return {"rps": n / took, "failures": sum(s != 200 for s in statuses)}


def tls_context(state: StateDir) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(edge_certs(state).ca_cert))


def httpx_client(base: str, ctx: ssl.SSLContext, *, http2: bool) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        verify=ctx,
        http1=not http2,
        http2=http2,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=30.0,
    )


async def bench_tcp(base: str, ctx: ssl.SSLContext, http2: bool, n: int, conc: int) -> dict:
    async with httpx_client(base, ctx, http2=http2) as client:

        async def get() -> int:
            return (await client.get(PATH)).status_code

        version = (await client.get(PATH)).http_version
        result = {"version": version, **await sequential(get, n)}
        result |= await concurrent(get, n, conc)

    async def cold() -> int:
        async with httpx_client(base, ctx, http2=http2) as fresh:
            return (await fresh.get(PATH)).status_code

    result["cold_p50_ms"] = (await sequential(cold, COLD_CONNECTIONS))["p50_ms"]
    return result


def quic_config(state: StateDir) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(str(edge_certs(state).ca_cert))
    return config


async def bench_h3(t: Topology, state: StateDir, n: int, conc: int) -> dict:
    host, port = t.bind_host, t.edge.https_port
    authority = f"localhost:{port}"

    def status(response: dict) -> int:
        return int(dict(response["headers"])[b":status"])

    async with connect(host, port, configuration=quic_config(state), create_protocol=H3Client) as c:

        async def get() -> int:
            return status(await c.get(authority, PATH, {}))

        result = {"version": "HTTP/3", **await sequential(get, n)}
        result |= await concurrent(get, n, conc)

    async def cold() -> int:
        config = quic_config(state)
        async with connect(host, port, configuration=config, create_protocol=H3Client) as fresh:
            return status(await fresh.get(authority, PATH, {}))

    result["cold_p50_ms"] = (await sequential(cold, COLD_CONNECTIONS))["p50_ms"]
    return result


def internal_token(t: Topology, state: StateDir, user: str) -> str:
    """The internal JWT auth's token exchange (RFC 8693) gives for the user's token."""
    resp = httpx.post(
        f"{issuer(t)}/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": token(t, state, user),
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        },
        verify=tls_context(state),
        timeout=10.0,
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


def bench_grpc(port: int, bearer: str, n: int) -> dict:
    metadata = (("authorization", f"Bearer {bearer}"),)
    latencies = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        request = users_pb2.GetUserRequest(user_id="alice")
        stub.GetUser(request, metadata=metadata, timeout=5)  # connect and warm up
        for _ in range(n):
            started = time.perf_counter()
            stub.GetUser(request, metadata=metadata, timeout=5)
            latencies.append(time.perf_counter() - started)
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def run(n: int, conc: int) -> dict:
    t, state = load(), StateDir.default()
    base = f"https://{t.bind_host}:{t.edge.https_port}"
    ctx = tls_context(state)
    edge = {
        "HTTP/1.1": asyncio.run(bench_tcp(base, ctx, False, n, conc)),
        "HTTP/2": asyncio.run(bench_tcp(base, ctx, True, n, conc)),
        "HTTP/3": asyncio.run(bench_h3(t, state, n, conc)),
    }
    bearer = internal_token(t, state, "admin")
    users = t.service("users").instances[0]
    via = next(u for u in t.service("orders").upstreams if u.service == "users")
    mesh = {
        f"direct to users :{users.port}": bench_grpc(users.port, bearer, n),
        f"through the sidecars (:{via.local_bind_port} → mTLS → :{users.sidecar.port})": (
            bench_grpc(via.local_bind_port, bearer, n)
        ),
    }
    return {"requests": n, "concurrency": conc, "edge": edge, "grpc": mesh}


def record(result: dict, command: str) -> None:
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    n, conc = result["requests"], result["concurrency"]
    lines = [
        f"### {day}: `{command}`",
        "",
        f"Edge, `GET {PATH}` ({n} requests; throughput with {conc} in flight on one connection; "
        f"cold = a new connection's first answer, median of {COLD_CONNECTIONS}):",
        "",
        "| protocol | p50 | p99 | throughput, one connection | cold p50 | failures |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["edge"].items():
        # The version the client actually spoke, should negotiation have fallen back.
        label = name if r["version"] == name else f"{name} (spoke {r['version']})"
        lines.append(
            f"| {label} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
            f"{r['rps']:,.0f} req/s | {r['cold_p50_ms']:.1f} ms | {r['failures']} |"
        )
    lines += ["", f"gRPC `users.GetUser`, {n} sequential calls:", "", "| path | p50 | p99 |"]
    lines.append("|---|---|---|")
    for name, r in result["grpc"].items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms |")
    header = (
        f"{SECTION}\n\nHTTP/1.1, HTTP/2 and HTTP/3 through the edge and the mesh, and one gRPC "
        "call with and without the sidecar pair, on one 2-core machine with the whole mesh "
        f"running; a Python client ({platform.python_implementation()} "
        f"{platform.python_version()}: httpx, aioquic, grpcio) on the same machine. "
        "`bench/edge_protocols.py` explains the method.\n"
    )
    text = RESULTS.read_text()
    if SECTION not in text:
        text = text.rstrip() + "\n\n" + header
    RESULTS.write_text(text.rstrip() + "\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    result = run(args.requests, args.concurrency)
    print(json.dumps(result, indent=2))
    command = "python -m bench.edge_protocols"
    if (args.requests, args.concurrency) != (400, 50):
        command += f" --requests {args.requests} --concurrency {args.concurrency}"
    record(result, command)


if __name__ == "__main__":
    main()
