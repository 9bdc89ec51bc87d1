"""Helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import grpc
import httpx

from mesh.components.consul import ConsulClient
from mesh.placement import NativePlacement, Placement
from mesh.runtime import consul as consul_runtime
from mesh.runtime.envoy_admin import client as envoy_admin_client
from mesh.runtime.envoy_admin import socket_path as envoy_admin_socket
from mesh.topology import Topology

if TYPE_CHECKING:
    from mesh.runtime.supervisor import Mesh

T = TypeVar("T")

# A token, or what gives one that is still valid each time it is asked (tokens expire during a
# long session: internal ones after 4-5 minutes).
TokenSource = str | Callable[[], str]


def operator_consul(mesh: Mesh, addr: str | None = None, timeout: float = 2.0) -> ConsulClient:
    """Consul's HTTP API at `addr` (default: the client agent's) with the operator token:
    Consul's ACLs refuse anonymous calls."""
    addr = addr or mesh.topology.consul_http_addr
    return consul_runtime.operator_client(addr, mesh.state, timeout)


# All that Go's HTTPS server (Consul's) writes to a plain HTTP request before it closes the
# connection: the TLS handshake's refusal (a fixed 400), no answer of the API.
PLAIN_HTTP_REFUSAL = "Client sent an HTTP request to an HTTPS server"


def api_answers_plain_http(https_addr: str, path: str = "/v1/status/leader") -> bool:
    """Whether the API at `https_addr` answers `path` when asked in plain HTTP on its port."""
    plain = https_addr.replace("https://", "http://", 1)
    try:
        resp = httpx.get(plain + path, timeout=5)
    except httpx.TransportError:
        return False
    return not (resp.status_code == 400 and PLAIN_HTTP_REFUSAL in resp.text)


def current_token(source: TokenSource) -> str:
    return source if isinstance(source, str) else source()


def seconds_left(token: str) -> float:
    """How long the JWT `token` has before its `exp` (its signature is not checked)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"]) - time.time()


# A cached token is minted again when it has less than this left, so that a test never holds
# one that expires while it runs.
TOKEN_MARGIN_S = 120


def fresh(cache: dict[str, str], user: str, mint: Callable[[], str]) -> str:
    """The user's token in `cache`, minted anew when missing or about to expire."""
    if user not in cache or seconds_left(cache[user]) < TOKEN_MARGIN_S:
        cache[user] = mint()
    return cache[user]


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <token>` on every request that does not carry one of its own, the
    token asked for each time."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {current_token(self._token)}"
        yield request


class FreshUser(NamedTuple):
    """A user made for one caller (tests/conftest.py `fresh_user`)."""

    id: str
    token: str  # an external access token (15 minutes)


class FreshClient(NamedTuple):
    """A fresh user and a client of the edge carrying its token (`edge_as_fresh`)."""

    user_id: str
    http: httpx.Client


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # the condition may fail while the system converges
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


async def wait_until(
    condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.01
) -> None:
    """`wait_for` inside an event loop: yields to the tasks that make `condition` come true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


HEALED_IN_A_ROW = 4


@contextmanager
def intention_removed(
    mesh: Mesh, consul: ConsulClient, destination: str, healed: Callable[[], bool]
) -> Iterator[None]:
    """Without its service-intentions entry, the default deny refuses every caller of
    `destination` (its sidecar's RBAC filter, within a second or so); afterwards every config
    entry of mesh/consul/config-entries is written back, and the context ends once every
    sidecar of `destination` has the intention again, has closed the connections opened under
    the old one (within its drain time), and `healed` (a call through the mesh) holds
    HEALED_IN_A_ROW times in a row: with several instances one call shows one of them."""
    consul.delete_config_entry("service-intentions", destination)
    try:
        yield
    finally:
        consul_runtime.apply_config_entries(
            mesh.binaries["consul"]["consul"], mesh.topology.consul_http_addr, mesh.state
        )
        wait_for(
            lambda: intentions_enforced(mesh, consul, destination),
            timeout=30,
            what=f"every {destination} sidecar to allow its callers again",
        )
        wait_for(
            lambda: not filter_chains_draining(mesh, destination),
            timeout=60,
            what=f"every {destination} sidecar to close the connections of its old filter chain",
        )
        wait_for(
            lambda: all(healed() for _ in range(HEALED_IN_A_ROW)),
            timeout=30,
            what=f"calls to {destination} to pass {HEALED_IN_A_ROW} times in a row",
        )


def filter_chains_draining(mesh: Mesh, destination: str) -> int:
    """Filter chains the sidecars of `destination` still drain: their connections keep the
    RBAC they were opened under (docs/mesh-config.md)."""
    draining = 0
    for instance in mesh.topology.service(destination).instances:
        with envoy_admin(mesh, f"{instance.id}-sidecar") as admin:
            text = admin.get("/stats", params={"filter": "total_filter_chains_draining$"}).text
        draining += sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)
    return draining


def intentions_enforced(mesh: Mesh, consul: ConsulClient, destination: str) -> bool:
    """Whether the RBAC filter of every sidecar of `destination` names each caller its
    service-intentions entry allows (Consul's principal pattern ends in `/svc/<name>$`)."""
    entry = consul.config_entry("service-intentions", destination) or {"Sources": []}
    callers = [s["Name"] for s in entry["Sources"] if s.get("Action") == "allow"]
    for instance in mesh.topology.service(destination).instances:
        with envoy_admin(mesh, f"{instance.id}-sidecar") as admin:
            dump = admin.get("/config_dump", params={"resource": "dynamic_listeners"}).text
        if not all(f"/svc/{caller}$" in dump for caller in callers):
            return False
    return True


def edge_client(
    topology: Topology, token: TokenSource, placement: Placement | None = None
) -> httpx.Client:
    """An HTTP client of the edge's plain listener (of `placement`, by default the native one)
    carrying an external token."""
    public = (placement or NativePlacement.of(topology)).public()
    return httpx.Client(
        base_url=f"http://{public}:{topology.edge.http_port}",
        auth=BearerAuth(token),
        timeout=5.0,
    )


def envoy_admin(mesh: Mesh, process: str) -> httpx.Client:
    """The admin API of the Envoy the mesh runs as `process` (`edge-1`, `orders-1-sidecar`),
    on its Unix socket."""
    return envoy_admin_client(envoy_admin_socket(mesh.state, process))


def envoy_stat(mesh: Mesh, process: str, cluster_prefix: str, stat: str) -> int:
    """Sum of one stat of Envoy `process` over the clusters whose name starts with
    `cluster_prefix`."""
    with envoy_admin(mesh, process) as admin:
        text = admin.get("/stats", params={"filter": f"^cluster\\.{cluster_prefix}"}).text
    return sum(
        int(line.rsplit(":", 1)[1])
        for line in text.splitlines()
        if line.split(":", 1)[0].endswith(f".{stat}")
    )


def instance_port(topology: Topology, service: str) -> int:
    return topology.service(service).instances[0].port


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a sync gRPC channel."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        header = ("authorization", f"Bearer {current_token(self._token)}")
        metadata = [*(details.metadata or ()), header]
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def faults_in_effect(mesh: Mesh, service: str) -> list[str]:
    """The running instances of `service` whose fault flags are in effect now (their admin
    port's `shopmesh_fault_injection_active`); an instance that does not answer is not running,
    and reads the flags afresh when it starts."""
    gauge = f'shopmesh_fault_injection_active{{service="{service}"}} 1.0'
    in_effect = []
    for instance in mesh.topology.service(service).instances:
        url = f"http://{mesh.topology.bind_host}:{instance.metrics_port}/metrics"
        try:
            metrics = httpx.get(url, timeout=2.0).text
        except httpx.TransportError:
            continue
        if gauge in metrics.splitlines():
            in_effect.append(instance.id)
    return in_effect
