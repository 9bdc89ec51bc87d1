"""Clients of the real mesh for the attack tests. HTTP: each attacker has a loopback address of
its own (127.0.0.0/8 is all local), so the limits it trips are its own and no other test's.
Kafka: a client signed in as one principal."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from aiokafka.conn import AIOKafkaConnection, create_conn

from mesh.components import kafka_auth
from mesh.runtime.supervisor import Mesh
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


def kafka_client(mesh: Mesh, principal: str = kafka_auth.ADMIN, **settings: Any) -> dict[str, Any]:
    """An aiokafka client's keyword arguments (producer, consumer or admin) for the mesh's
    brokers, signed in as `principal` with its real password from the state dir: a service's
    stolen credentials, or the project's own `admin` for the checks."""
    return {
        "bootstrap_servers": mesh.topology.kafka_bootstrap(),
        "request_timeout_ms": 10000,
        **settings,
        **kafka_auth.options_of(mesh.state, principal),
    }


@contextlib.asynccontextmanager
async def kafka_connection(
    mesh: Mesh, principal: str | None = kafka_auth.ADMIN, password: str | None = None
) -> AsyncIterator[AIOKafkaConnection]:
    """A raw connection to the first broker (its answer to one request, which aiokafka's clients
    may retry quietly), signed in as `principal` with its real password or with `password`;
    principal None: not signed in at all."""
    node = mesh.topology.kafka.nodes[0]
    sign_in: dict[str, Any] = {}
    if principal is not None:
        sign_in = (
            kafka_auth.options_of(mesh.state, principal)
            if password is None
            else kafka_auth.client_options(principal, password)
        )
    conn = await create_conn(
        mesh.placement.host(node.name), node.port, request_timeout_ms=5000, **sign_in
    )
    try:
        yield conn
    finally:
        conn.close()
