"""Fixtures for the suites that need the real native mesh (integration, chaos).

One mesh per test session, started through the same code path as `mesh up`, and only when a
test asks for it: the unit tests never start anything."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from mesh.components import postgres
from mesh.components.consul import ConsulClient
from mesh.components.edge import issuer
from mesh.runtime import demo, faults, hosting, netfaults, users
from mesh.runtime.hosting import on_subnet
from mesh.runtime.hosts import Network
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology, load
from shopmesh.payments.v1 import payments_pb2_grpc
from shopmesh.users.v1 import users_pb2_grpc
from tests.support import (
    BearerInterceptor,
    FreshClient,
    FreshUser,
    TokenSource,
    edge_client,
    faults_in_effect,
    fresh,
    instance_port,
    operator_consul,
    wait_for,
)

TEST_STATE_DIR = Path(os.environ.get("SHOPMESH_TEST_STATE_DIR", REPO_ROOT / ".state" / "test"))


@pytest.fixture(scope="session")
def mesh() -> Iterator[Mesh]:
    state = StateDir(TEST_STATE_DIR.resolve())
    if state.root.exists():
        # An interrupted earlier run may have left processes behind: stop them from their pid
        # files, then start from a clean state dir.
        Mesh.create(load(), state).down(say=lambda _: None)
        shutil.rmtree(state.root)
    yield from up_for_the_session(Mesh.create(load(), state))


def up_for_the_session(running: Mesh) -> Iterator[Mesh]:
    """The mesh up until the session ends, then down; down at once if it fails to come up."""
    try:
        running.up()
    except BaseException:
        running.down()
        raise
    yield running
    running.down()


# The hosts placement's mesh (docs/hosts.md) in a state dir, hosts and subnet of its own, so it
# never meets the native test mesh, tests/integration/test_hosts.py's hosts or a user's.
HOSTS_STATE_DIR = TEST_STATE_DIR.parent / f"{TEST_STATE_DIR.name}-hosts"
HOSTS_SUBNET = IPv4Network("10.86.2.0/24")
HOSTS_PREFIX, HOSTS_LINKS = "shopmesh-mt", "smm"


@pytest.fixture(scope="session")
def hosts_mesh() -> Iterator[Mesh]:
    """The whole mesh across network-namespace hosts, started as `mesh up --placement hosts`
    starts it; at the end `down` removes the hosts too. Its tests (tests/hosts) run in a
    session of their own (`make test`), never beside the native mesh: two full meshes at once
    are more than 2 cores carry through a lost host's restart."""
    state = StateDir(HOSTS_STATE_DIR.resolve())
    network = Network(on_subnet(load(), HOSTS_SUBNET).hosts, HOSTS_PREFIX, HOSTS_LINKS)
    if state.root.exists():
        Mesh.create(load(), state).down(say=lambda _: None)
        shutil.rmtree(state.root)
    netfaults.down(network)  # hosts an interrupted run left without a state dir
    state.ensure()
    hosting.place_on(state, network)
    yield from up_for_the_session(Mesh.create(load(), state))


@pytest.fixture(scope="session")
def topology(mesh: Mesh) -> Topology:
    return mesh.topology


class Tokens:
    """Tokens of the seeded demo users, from the real auth service through the edge, each
    minted again before it expires (external: 15 minutes, internal: 4-5)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._external: dict[str, str] = {}
        self._internal: dict[str, str] = {}

    def external(self, user: str) -> str:
        return fresh(
            self._external, user, lambda: demo.token(self._mesh.topology, self._mesh.state, user)
        )

    def internal(self, user: str) -> str:
        """The internal JWT auth's token exchange (RFC 8693) gives for the user's token."""
        return fresh(self._internal, user, lambda: self._exchange(self.external(user)))

    def _exchange(self, external: str) -> str:
        resp = httpx.post(
            f"{issuer(self._mesh.topology, self._mesh.placement)}/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": external,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            },
            verify=ssl.create_default_context(cafile=str(edge_certs(self._mesh.state).ca_cert)),
            timeout=10.0,
        )
        resp.raise_for_status()
        token: str = resp.json()["access_token"]
        return token


@pytest.fixture(scope="session")
def tokens(mesh: Mesh) -> Tokens:
    return Tokens(mesh)


@pytest.fixture(scope="session")
def edge_as(topology: Topology, tokens: Tokens) -> Iterator:
    """edge_as(user): an HTTP client of the edge's plain listener carrying the user's token."""
    clients: list[httpx.Client] = []

    def client(user: str) -> httpx.Client:
        made = edge_client(topology, partial(tokens.external, user))
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()


FRESH_USERS_PER_BATCH = 50


class FreshUsers:
    """Users of their own for tests that send many requests: each has the edge's whole per-user
    budget (100 requests a minute), where alice's is shared by every module. Made by the admin
    through mesh/runtime/users.py (what `mesh users create` runs), FRESH_USERS_PER_BATCH in one
    batch when the session first asks and again whenever they are used up; each handed out once."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._unused: list[str] = []

    def take(self) -> FreshUser:
        topology, state = self._mesh.topology, self._mesh.state
        if not self._unused:
            self._unused = users.create_users(topology, state, FRESH_USERS_PER_BATCH, prefix="test")
        user_id = self._unused.pop()
        return FreshUser(user_id, demo.token(topology, state, user_id))


@pytest.fixture(scope="session")
def fresh_user(mesh: Mesh) -> Callable[[], FreshUser]:
    """fresh_user(): (user_id, external token) of a user no other caller gets."""
    return FreshUsers(mesh).take


@pytest.fixture(scope="session")
def edge_as_fresh(topology: Topology, fresh_user) -> Iterator[Callable[[], FreshClient]]:
    """edge_as_fresh(): (user_id, a client of the edge carrying its token) for a fresh user."""
    clients: list[httpx.Client] = []

    def client() -> FreshClient:
        user = fresh_user()
        clients.append(edge_client(topology, user.token))
        return FreshClient(user.id, clients[-1])

    yield client
    for made in clients:
        made.close()


@pytest.fixture(scope="session")
def edge(edge_as) -> httpx.Client:
    """The edge, as alice."""
    return edge_as("alice")


@pytest.fixture(scope="session")
def consul(mesh: Mesh) -> Iterator[ConsulClient]:
    """The client agent's HTTP API, with the operator token (anonymous is refused)."""
    with operator_consul(mesh) as client:
        yield client


def authorized_channel(port: int, token: TokenSource) -> grpc.Channel:
    """A channel straight to a service on loopback that sends `token` with every call."""
    return grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{port}"), BearerInterceptor(token)
    )


@pytest.fixture(scope="session")
def users_grpc(topology: Topology, tokens: Tokens) -> Iterator[users_pb2_grpc.UserServiceStub]:
    """Straight to the users service, as the admin (its sidecar is skipped, not its auth)."""
    with authorized_channel(
        instance_port(topology, "users"), partial(tokens.internal, "admin")
    ) as ch:
        yield users_pb2_grpc.UserServiceStub(ch)


@pytest.fixture(scope="session")
def payments_grpc(
    topology: Topology, tokens: Tokens
) -> Iterator[payments_pb2_grpc.PaymentServiceStub]:
    admin = partial(tokens.internal, "admin")
    with authorized_channel(instance_port(topology, "payments"), admin) as ch:
        yield payments_pb2_grpc.PaymentServiceStub(ch)


@pytest.fixture(scope="session")
def payments_db(mesh: Mesh):
    """Runs one SQL query against the payments database and returns the rows."""
    password = postgres.passwords(mesh.state, mesh.topology)["payments"]
    url = postgres.database_url(mesh.topology, mesh.placement, "payments", password, "payments")

    def query(sql: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(url)
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    return query


@pytest.fixture
def fault(mesh: Mesh) -> Iterator:
    """Sets fault flags for a test and clears every one it set afterwards."""
    touched: set[str] = set()

    def set_fault(service: str, **kwargs: object) -> None:
        touched.add(service)
        faults.set_fault(mesh.topology, mesh.state, service, **kwargs)

    yield set_fault
    for service in touched:
        faults.clear_fault(mesh.topology, mesh.state, service)
    for service in touched:
        # Each instance learns of it through its own Consul watch: the next test must not meet
        # a fault this one set.
        wait_for(lambda service=service: not faults_in_effect(mesh, service), timeout=30,
                 what=f"every {service} instance to stop injecting faults")  # fmt: skip
