"""Two edges behind the balancer, through the real mesh: the public ports reach both edges over
HTTP/1.1, TLS with HTTP/2 and HTTP/3; the edges see each client's own address through the
balancer (PROXY protocol v2), so two addresses have two per-address budgets; and a user has one
budget whichever edge, or the balancer, their requests come through."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from contextlib import ExitStack

import httpx
import pytest

from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology
from tests.edges import balancer_sees_up, served_by_each
from tests.h3client import h3_get_with_headers
from tests.integration.test_rate_limits_through_edge import at_the_start_of_a_window

PUBLIC_PATH = "/.well-known/openid-configuration"  # no token: counted per address only
# Fresh connections per protocol: over TCP the balancer alternates them between the edges (they
# are held open: `balance leastconn`); over UDP the kernel picks by the client's random port,
# and both edges are missed by all 20 once in 2^19.
CONNECTIONS = 20


def cafile(mesh: Mesh) -> str:
    return str(edge_certs(mesh.state).ca_cert)


def get_on_a_new_connection(mesh: Mesh, protocol: str, held: ExitStack) -> int:
    """GET PUBLIC_PATH through the public ports on a connection of its own, kept open in `held`
    (the balancer sends a new connection to the edge with the fewest: with the earlier ones
    still open, they alternate, whatever other clients hold); the status."""
    t = mesh.topology
    if protocol == "h3":
        status, _, _ = h3_get_with_headers(
            t.bind_host, t.edge.https_port, PUBLIC_PATH, {}, cafile(mesh)
        )
        return status
    if protocol == "h2":
        verify = ssl.create_default_context(cafile=cafile(mesh))
        client = held.enter_context(httpx.Client(http2=True, verify=verify, timeout=10.0))
        response = client.get(f"https://{t.bind_host}:{t.edge.https_port}{PUBLIC_PATH}")
        assert response.http_version == "HTTP/2"
        assert response.headers["alt-svc"].startswith(f'h3=":{t.edge.https_port}"')
        return response.status_code
    client = held.enter_context(httpx.Client(timeout=10.0))
    return client.get(f"http://{t.bind_host}:{t.edge.http_port}{PUBLIC_PATH}").status_code


@pytest.mark.parametrize("protocol", ["h1", "h2", "h3"])
def test_the_public_ports_reach_both_edges(mesh: Mesh, protocol: str) -> None:
    topology = mesh.topology
    for edge in topology.edge.instances:
        assert balancer_sees_up(topology, edge.id), edge.id
    before = served_by_each(mesh, protocol)
    with ExitStack() as held:
        statuses = [get_on_a_new_connection(mesh, protocol, held) for _ in range(CONNECTIONS)]
    after = served_by_each(mesh, protocol)

    assert statuses == [200] * CONNECTIONS
    taken = {edge_id: after[edge_id] - before[edge_id] for edge_id in after}
    assert all(count > 0 for count in taken.values()), taken
    # Nothing else asks the edges over this protocol meanwhile: each request is counted once.
    assert sum(taken.values()) == CONNECTIONS, taken


def remaining_for(client: httpx.Client) -> int:
    response = client.get(PUBLIC_PATH)
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining"])


def client_from(address: str, base_url: str, mesh: Mesh) -> httpx.Client:
    verify = ssl.create_default_context(cafile=cafile(mesh))
    transport = httpx.HTTPTransport(local_address=address, verify=verify)
    return httpx.Client(base_url=base_url, transport=transport, timeout=10.0)


@pytest.mark.parametrize(
    ("listener", "first", "second"),
    [("plain", "127.0.0.23", "127.0.0.24"), ("tls", "127.0.0.25", "127.0.0.26")],
)
def test_two_client_addresses_have_two_budgets_through_the_balancer(
    mesh: Mesh, listener: str, first: str, second: str
) -> None:
    """The per-address limit counts each client, not the balancer: `first` spends three of its
    budget, then `second` (through the same balancer, in the same window) still has all of
    its own. Without the PROXY header both would be the balancer's 127.0.0.1, one budget."""
    t = mesh.topology
    limit = t.edge.per_ip_limit
    base = (
        f"http://{t.bind_host}:{t.edge.http_port}"
        if listener == "plain"
        else f"https://{t.bind_host}:{t.edge.https_port}"
    )
    with client_from(first, base, mesh) as a, client_from(second, base, mesh) as b:

        def one_window() -> tuple[list[int], int] | None:
            at_the_start_of_a_window(limit.per_seconds, needed=0.8 * limit.per_seconds)
            spent = [remaining_for(a) for _ in range(3)]
            fresh = remaining_for(b)
            spent.append(remaining_for(a))
            # All of `first`'s in one window (a new window would start its count afresh), so
            # `second`'s, sent between them, was in that window too.
            in_one_window = spent == list(range(spent[0], spent[0] - 4, -1))
            return (spent, fresh) if in_one_window else None

        found = None
        for _ in range(10):  # a busy machine may let a window turn during the five requests
            found = one_window()
            if found:
                break
        assert found, "no window held five requests"
        spent, fresh = found
    assert spent[0] == limit.requests - 1, spent
    assert fresh == limit.requests - 1, (spent, fresh)


def user_get(base_url: str, token: str, verify: ssl.SSLContext | bool) -> Callable[[], int]:
    client = httpx.Client(
        base_url=base_url,
        headers={"authorization": f"Bearer {token}"},
        verify=verify,
        timeout=10.0,
    )

    def get() -> int:
        return client.get("/notifications").status_code

    return get


def test_one_user_has_one_budget_on_both_edges_and_through_the_balancer(
    mesh: Mesh, topology: Topology, fresh_user
) -> None:
    user = fresh_user()
    host = topology.bind_host
    verify = ssl.create_default_context(cafile=cafile(mesh))
    first, second = topology.edge.instances
    ways = {
        # Each edge straight on its own ports (no PROXY header: the edge takes the connection
        # as it is), and the public port through the balancer.
        f"{first.id} plain": user_get(f"http://{host}:{first.http_port}", user.token, False),
        f"{second.id} TLS": user_get(f"https://{host}:{second.https_port}", user.token, verify),
        "balancer plain": user_get(f"http://{host}:{topology.edge.http_port}", user.token, False),
    }
    limit = topology.edge.per_user_limit
    at_the_start_of_a_window(limit.per_seconds, needed=30)
    names = list(ways)
    spent = [ways[names[i % len(names)]]() for i in range(limit.requests)]
    refused = {name: ways[name]() for name in names}

    assert set(spent) == {200}, json.dumps(spent)
    assert refused == dict.fromkeys(names, 429)
