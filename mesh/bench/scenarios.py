"""The benchmark scenarios: what each sends, where, with which tool; `run` does one run.

GET /orders/{id} of an existing order along four paths (a service's own port, the sidecar pair,
the edge over HTTP/1.1, TLS HTTP/2 and HTTP/3), users.GetUser over gRPC with and without the
sidecars, and POST /orders through the edge. Through the edge every limit is on: the load is
spread over the bench users (each reads their own order with their own token, round robin) and
over several client addresses (one tool process per address).
"""

from __future__ import annotations

import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mesh.bench import accounts, slots, targets
from mesh.bench.addresses import AddressProbe
from mesh.bench.figures import Figures
from mesh.bench.orders_check import check as check_orders
from mesh.bench.resources import CpuMeter
from mesh.bench.tools import CEILING_WORKERS, GrpcAttack, HttpAttack, attack, grpc_attack, wrk
from mesh.runtime import protos
from mesh.runtime.paths import StateDir
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology

DEFAULT_USERS = 1200
SOURCES = 4
GET_USER = "shopmesh.users.v1.UserService.GetUser"
# Before a run through the edge, each of its users sends one request (not measured): the
# steady state of signed-in users, whose tokens the edge has exchanged already. A user's first
# request waits for auth's token exchange; the warm-up's own figures show what that costs.
WARM_UP_RATE = 100


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: str  # "get", "post" or "grpc"
    path: str  # "direct", "sidecars" or "edge"
    protocol: str  # "h1", "h2", "h3" or "grpc"


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("direct", "GET /orders/{id}, direct to orders (internal JWT)", "get", "direct",
                 "h1"),
        Scenario("sidecars", "GET /orders/{id}, edge sidecar → orders sidecar → orders "
                 "(internal JWT)", "get", "sidecars", "h1"),
        Scenario("edge-h1", "GET /orders/{id}, edge plain listener, HTTP/1.1", "get", "edge",
                 "h1"),
        Scenario("edge-h2", "GET /orders/{id}, edge TLS listener, HTTP/2", "get", "edge", "h2"),
        Scenario("edge-h3", "GET /orders/{id}, edge QUIC listener, HTTP/3", "get", "edge", "h3"),
        Scenario("grpc-direct", "gRPC users.GetUser, direct to users (internal JWT)", "grpc",
                 "direct", "grpc"),
        Scenario("grpc-sidecars", "gRPC users.GetUser, edge sidecar → users sidecar → users",
                 "grpc", "sidecars", "grpc"),
        Scenario("orders-post", "POST /orders through the edge, TLS HTTP/2 (sync payment)",
                 "post", "edge", "h2"),
    )
}  # fmt: skip


class BenchError(RuntimeError):
    """A run cannot be done as asked; the message says why and what to change."""


@dataclass(frozen=True)
class Run:
    scenario: str
    rate: int  # requests per second; 0: the closed-loop ceiling with `workers` in flight
    duration_s: float
    workers: int = CEILING_WORKERS
    users: int = DEFAULT_USERS
    tool: str = "vegeta"  # "wrk": closed loop, direct and sidecars only


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _service_port(topology: Topology, service: str) -> int:
    return topology.service(service).instances[0].port


def _edge_upstream(topology: Topology, service: str) -> int:
    """The first edge's sidecar's upstream listener for `service`."""
    upstreams = topology.edge.instances[0].upstreams
    (port,) = [u.local_bind_port for u in upstreams if u.service == service]
    return port


def _base(topology: Topology, scenario: Scenario, service: str = "orders") -> str:
    host = topology.bind_host
    if scenario.path == "direct":
        return f"http://{host}:{_service_port(topology, service)}"
    if scenario.path == "sidecars":
        return f"http://{host}:{_edge_upstream(topology, service)}"
    if scenario.protocol == "h1":
        return f"http://{host}:{topology.edge.http_port}"
    return f"https://{host}:{topology.edge.https_port}"


def run(topology: Topology, state: StateDir, request: Run) -> dict[str, Any]:
    """One run; its figures and what it was, as one JSON-able dict."""
    if request.scenario not in SCENARIOS:
        raise BenchError(f"no scenario {request.scenario!r}: one of {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[request.scenario]
    if request.rate < 0 or request.duration_s <= 0:
        raise BenchError("--rate must be >= 0 (0: the closed-loop ceiling), --duration > 0")
    if request.tool == "wrk" and (scenario.path == "edge" or request.rate):
        raise BenchError("wrk (closed loop, one token) fits only direct and sidecars, --rate 0")
    sources = tuple(targets.sources(SOURCES))
    result = {
        "scenario": scenario.name,
        "tool": _tool_name(scenario, request),
        "target_rate": request.rate,
        "duration_s": request.duration_s,
    }
    if scenario.path == "edge":
        figures, extra = _through_edge(topology, state, scenario, request, sources)
    else:
        figures, extra = _behind_edge(topology, state, scenario, request, sources)
    return result | figures.as_dict() | extra


def _tool_name(scenario: Scenario, request: Run) -> str:
    if request.tool == "wrk":
        return "wrk"
    return {"grpc": "ghz", "h3": "h3load"}.get(scenario.protocol, "vegeta")


def _behind_edge(
    topology: Topology, state: StateDir, scenario: Scenario, request: Run, sources: tuple[str, ...]
) -> tuple[Figures, dict[str, Any]]:
    """A service's own port or the sidecar pair, as one bench user with an internal JWT."""
    (user,) = accounts.ensure_users(topology, state, 1)
    external = accounts.tokens(topology, state, [user], sources)[user]
    internal = accounts.internal_token(topology, state, external)
    if scenario.kind == "grpc":
        protos.ensure_generated()
        host, port = topology.bind_host, _grpc_port(topology, scenario)
        grpc_spec = GrpcAttack(
            address=f"{host}:{port}",
            call=GET_USER,
            data={"user_id": user},
            metadata={"authorization": f"Bearer {internal}"},
            protoset=protos.DESCRIPTOR_SET,
            rate=request.rate,
            duration_s=request.duration_s,
            workers=request.workers,
        )
        return _measured(state, lambda: grpc_attack(grpc_spec), {})
    order = accounts.own_orders(topology, state, {user: external}, sources)[user]
    url = f"{_base(topology, scenario)}/orders/{order}"
    if request.tool == "wrk":
        headers = targets.bearer(internal)
        return _measured(state, lambda: wrk(url, headers, request.duration_s, request.workers), {})
    with _targets_file(targets.gets([(url, internal)])) as path:
        spec = HttpAttack(path, request.rate, request.duration_s, sources, http2=False,
                          workers=request.workers)  # fmt: skip
        return _measured(state, lambda: attack(spec), {"sources": list(sources)})


def _measured(
    state: StateDir, load: Callable[[], Figures], extra: dict[str, Any]
) -> tuple[Figures, dict[str, Any]]:
    """The run's figures, with the CPU time each mesh component spent on it per request, the
    load tool's own (its processes are this one's children, waited for before `load` returns)
    and the machine's shares over the run."""
    tool_before = _children_cpu_s()
    with CpuMeter(state) as meter:
        figures = load()
    per_request = meter.per_request_ms(figures.requests)
    tool_s = _children_cpu_s() - tool_before
    return figures, extra | {
        "cpu_ms_per_request": per_request,
        "cpu_ms_per_request_total": sum(per_request.values()),
        "load_tool_cpu_ms_per_request": 1000 * tool_s / max(figures.requests, 1),
        "machine": meter.machine_shares(tool_s),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _grpc_port(topology: Topology, scenario: Scenario) -> int:
    if scenario.path == "direct":
        return _service_port(topology, "users")
    return _edge_upstream(topology, "users")


def _through_edge(
    topology: Topology, state: StateDir, scenario: Scenario, request: Run, sources: tuple[str, ...]
) -> tuple[Figures, dict[str, Any]]:
    window = topology.edge.per_user_limit.per_seconds
    limit = topology.edge.per_user_limit.requests
    if request.duration_s > window:
        raise BenchError(f"a run through the edge lasts at most the per-user window, {window}s")
    if request.rate > slots.highest_rate(request.users, request.duration_s, limit, window):
        needed = slots.users_needed(request.rate, request.duration_s, limit, window)
        raise BenchError(
            f"{request.rate}/s for {request.duration_s:g}s would spend more than {limit} requests "
            f"of each of {request.users} users: use --users {needed} or a shorter --duration"
        )
    users = accounts.ensure_users(topology, state, request.users)
    tokens = accounts.tokens(topology, state, users, sources)
    lead_s = _warm_up_s(len(users) * len(topology.edge.instances)) + 2 * slots.MARGIN_S
    start, half = slots.next_start(time.time() + lead_s, request.duration_s, window)
    members = slots.share(users, half)
    base = _base(topology, scenario)
    posts_by_source: dict[str, list[targets.Request]] = {}
    if scenario.kind == "post":
        user_tokens = [(u, tokens[u]) for u in members]
        posts_by_source = {
            source: targets.order_posts(f"{base}/orders", user_tokens, count, accounts.ITEMS)
            for source, count in posts_per_source(request, sources).items()
        }
        requests = [post for posts in posts_by_source.values() for post in posts]
    else:
        orders = accounts.own_orders(topology, state, {u: tokens[u] for u in members}, sources)
        requests = targets.gets((f"{base}/orders/{orders[u]}", tokens[u]) for u in members)
    with _targets_file(requests) as path, _targets_files(posts_by_source) as by_source:
        spec = HttpAttack(
            path,
            request.rate,
            request.duration_s,
            sources,
            http3=scenario.protocol == "h3",
            http2=scenario.protocol == "h2",
            root_certs=edge_certs(state).ca_cert,
            workers=request.workers,
            targets_by_source=by_source,
        )
        _wait_until(start - lead_s)
        warm_up = _warm_up(topology, scenario, members, tokens, spec)
        _wait_until(start)
        with AddressProbe(topology, state, after_s=min(3.0, request.duration_s / 2)) as probe:
            figures, extra = _measured(state, lambda: attack(spec), {})
    extra |= {
        "warm_up": warm_up.as_dict(),
        "sources": list(sources),
        "client_addresses_counted": sorted(probe.seen),
        "users": len(members),
    }
    if scenario.kind == "post":
        accepted = figures.status_counts.get("201", 0)
        keys = targets.idempotency_keys(requests)
        extra["orders"] = check_orders(topology, state, keys, accepted)
    return figures, extra


def _warm_up_s(users: int) -> int:
    return math.ceil(users / WARM_UP_RATE)


def _warm_up(
    topology: Topology, scenario: Scenario, members: list[str], tokens: dict[str, str],
    spec: HttpAttack,
) -> Figures:  # fmt: skip
    """One request of each member (its newest notification: GET /notifications?limit=1) on
    each edge instance's listener of the run's protocol: each edge keeps its own token
    exchanges, per listener, and the balancer would send a user's first requests to one edge
    only. HTTP/3 reaches the edges through the kernel's spreading of the one UDP port, so there
    each member's request goes once per edge to the public port. Each source's process sends
    its own share of them (`targets.shares`)."""
    firsts = [
        request
        for base in _warm_up_bases(topology, scenario)
        for request in targets.gets(
            (f"{base}/notifications?limit=1", tokens[user]) for user in members
        )
    ]
    duration_s = _warm_up_s(len(firsts))
    rate = math.ceil(len(firsts) / duration_s)
    firsts_spec = replace(spec, rate=rate, duration_s=duration_s)
    processes = firsts_spec.processes()
    parts = targets.shares(firsts, [share * duration_s for _, share, _ in processes])
    by_source = {source: part for (source, _, _), part in zip(processes, parts, strict=True)}
    with _targets_file(firsts) as path, _targets_files(by_source) as paths:
        return attack(replace(firsts_spec, targets=path, targets_by_source=paths))


def _warm_up_bases(topology: Topology, scenario: Scenario) -> list[str]:
    host, edges = topology.bind_host, topology.edge.instances
    if scenario.protocol == "h1":
        return [f"http://{host}:{edge.http_port}" for edge in edges]
    if scenario.protocol == "h3":
        return [_base(topology, scenario)] * len(edges)
    return [f"https://{host}:{edge.https_port}" for edge in edges]


def posts_per_source(request: Run, sources: tuple[str, ...]) -> dict[str, int]:
    """Orders enough for each source's process: its share of the rate, or in a closed loop what
    its share of the workers could place at most (each at a 10 ms order)."""
    rates = targets.split(request.rate, len(sources))
    workers = targets.split(request.workers, len(sources))
    return {
        source: targets.posts_needed(rate if request.rate else 100 * worker, request.duration_s)
        for source, rate, worker in zip(sources, rates, workers, strict=True)
    }


def _wait_until(start: float) -> None:
    delay = start - time.time()
    if delay > 0:
        say(f"waiting {delay:.0f}s for the next slot of the per-user limit's window")
        time.sleep(delay)


@contextmanager
def _targets_files(requests: dict[str, list[targets.Request]]) -> Iterator[dict[str, Path]]:
    """Each list of requests as a vegeta JSON targets file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="shopmesh-targets-") as tmp:
        paths = {name: Path(tmp) / f"targets-{n}.json" for n, name in enumerate(requests)}
        for name, path in paths.items():
            path.write_text("\n".join(targets.line(r) for r in requests[name]) + "\n")
        yield paths


@contextmanager
def _targets_file(requests: list[targets.Request]) -> Iterator[Path]:
    with _targets_files({"all": requests}) as paths:
        yield paths["all"]
