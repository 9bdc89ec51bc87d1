"""The edge's global rate limits through the real mesh: one budget per user whatever listener a
request comes through (plain HTTP, TLS with HTTP/2, QUIC with HTTP/3), refusals that are problem
documents with one set of x-ratelimit-* headers, and nobody else slowed down."""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from mesh.components.edge import issuer
from mesh.placement import NativePlacement
from mesh.runtime import demo
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology
from tests.h3client import h3_get_with_headers

PATH = "/notifications"
RATELIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
# (status, headers in order, body), whatever the protocol.
Reply = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
def flooder_token(topology: Topology, mesh: Mesh) -> str:
    """The demo machine client's token (client_credentials, sub `shopmesh-cli`): an identity of
    its own that no other test sends requests as, so spending its budget slows nobody down."""
    seed = json.loads(demo.seed_file(mesh.state).read_text())
    response = httpx.post(
        f"{issuer(topology, NativePlacement.of(topology))}/token",
        data={"grant_type": "client_credentials"},
        auth=(demo.CLI_CLIENT, seed["clients"][demo.CLI_CLIENT]["secret"]),
        verify=ssl.create_default_context(cafile=str(edge_certs(mesh.state).ca_cert)),
        timeout=10.0,
    )
    response.raise_for_status()
    return response.json()["access_token"]


@pytest.fixture
def listeners(topology: Topology, mesh: Mesh, flooder_token: str) -> Iterator[dict]:
    """One GET as the flooder, per listener of the edge."""
    host, edge = topology.bind_host, topology.edge
    auth = {"authorization": f"Bearer {flooder_token}"}
    cafile = str(edge_certs(mesh.state).ca_cert)
    plain = httpx.Client(base_url=f"http://{host}:{edge.http_port}", headers=auth, timeout=5.0)
    h2 = httpx.Client(
        base_url=f"https://{host}:{edge.https_port}",
        headers=auth,
        http2=True,
        verify=ssl.create_default_context(cafile=cafile),
        timeout=5.0,
    )

    def over(client: httpx.Client, version: str) -> Callable[[], Reply]:
        def get() -> Reply:
            response = client.get(PATH)
            assert response.http_version == version
            return response.status_code, response.headers.multi_items(), response.content

        return get

    def h3() -> Reply:
        return h3_get_with_headers(host, edge.https_port, PATH, auth, cafile)

    yield {"plain": over(plain, "HTTP/1.1"), "h2": over(h2, "HTTP/2"), "h3": h3}
    plain.close()
    h2.close()


def at_the_start_of_a_window(seconds: int, needed: float) -> None:
    """The rate-limit service counts in fixed windows aligned to the clock: wait for a fresh one
    unless `needed` seconds are left in this one."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.2)


def ratelimit_headers(headers: list[tuple[str, str]]) -> Counter:
    return Counter(name.lower() for name, _ in headers if name.lower().startswith("x-ratelimit-"))


def test_one_users_requests_over_every_listener_spend_one_budget(
    topology: Topology, listeners: dict, edge_as
) -> None:
    limit = topology.edge.per_user_limit
    at_the_start_of_a_window(limit.per_seconds, needed=30)
    names = list(listeners)
    spent = [listeners[names[i % len(names)]]() for i in range(limit.requests)]
    # The 101st, 102nd and 103rd: one on each listener.
    refused = {name: listeners[name]() for name in names}

    assert [status for status, _, _ in spent if status == 429] == []
    for name, (status, headers, body) in refused.items():
        assert status == 429, name
        fields = dict((n.lower(), v) for n, v in headers)
        assert fields["content-type"].startswith("application/problem+json"), name
        assert json.loads(body)["status"] == 429
        # One set of x-ratelimit-* headers (the rule closest to its limit first, then every
        # rule's quota: `100, 1000;w=1, 100;w=60`), Retry-After at most once.
        assert ratelimit_headers(headers) == Counter(RATELIMIT_HEADERS), (name, headers)
        assert fields["x-ratelimit-limit"].split(",")[0] == str(limit.requests)
        assert f"{limit.requests};w={limit.per_seconds}" in fields["x-ratelimit-limit"]
        assert fields["x-ratelimit-remaining"] == "0"
        assert 0 <= int(fields["x-ratelimit-reset"]) <= limit.per_seconds
        assert [n.lower() for n, _ in headers].count("retry-after") <= 1

    other = edge_as("alice").get("/orders", params={"userId": "alice"})
    assert other.status_code == 200, other.text
    assert ratelimit_headers(other.headers.multi_items()) == Counter(RATELIMIT_HEADERS)
    assert int(other.headers["x-ratelimit-remaining"]) > 0


def test_requests_without_a_token_count_per_client_address_only(topology: Topology) -> None:
    """Public routes (no token, so no user) are counted by the client's address alone; the
    per-address limit itself is tests/integration/test_ratelimit_service.py's."""
    limit = topology.edge.per_ip_limit
    url = f"http://{topology.bind_host}:{topology.edge.http_port}/.well-known/openid-configuration"
    response = httpx.get(url, timeout=5.0)
    assert response.status_code == 200, response.text
    assert ratelimit_headers(response.headers.multi_items()) == Counter(RATELIMIT_HEADERS)
    quota = f"{limit.requests};w={limit.per_seconds}"
    assert response.headers["x-ratelimit-limit"] == f"{limit.requests}, {quota}"
