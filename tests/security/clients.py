"""Clients of the real mesh for the attack tests: each attacker has a loopback address of its
own (127.0.0.0/8 is all local), so the limits it trips are its own and no other test's."""

from __future__ import annotations

import httpx

from mesh.topology import Topology


def from_address(topology: Topology, address: str) -> httpx.Client:
    """A client of the public plain port (the balancer, which names the client to the edge in
    a PROXY v2 header) whose connections come from `address`."""
    return httpx.Client(
        base_url=f"http://{topology.bind_host}:{topology.edge.http_port}",
        transport=httpx.HTTPTransport(local_address=address),
        timeout=15.0,
    )


def password_grant(
    client: httpx.Client, username: str, password: str, **headers: str
) -> httpx.Response:
    return client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        headers=headers,
    )
