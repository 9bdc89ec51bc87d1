"""Fixtures for the suites that need the real native mesh (integration, chaos).

One mesh per test session, started through the same code path as `mesh up`, and only when a
test asks for it: the unit tests never start anything."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from mesh.runtime import faults, postgres
from mesh.runtime.consul import ConsulClient
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.provision import install_all
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology, load
from shopmesh.payments.v1 import payments_pb2_grpc
from shopmesh.users.v1 import users_pb2_grpc
from tests.support import instance_port

TEST_STATE_DIR = Path(os.environ.get("SHOPMESH_TEST_STATE_DIR", REPO_ROOT / ".state" / "test"))


@pytest.fixture(scope="session")
def mesh() -> Iterator[Mesh]:
    state = StateDir(TEST_STATE_DIR.resolve())
    if state.root.exists():
        # An interrupted earlier run may have left processes behind: stop them from their pid
        # files, then start from a clean state dir.
        Mesh(load(), state, install_all()).down(say=lambda _: None)
        shutil.rmtree(state.root)
    running = Mesh.create(load(), state)
    try:
        running.up()
    except BaseException:
        running.down()
        raise
    yield running
    running.down()


@pytest.fixture(scope="session")
def topology(mesh: Mesh) -> Topology:
    return mesh.topology


@pytest.fixture(scope="session")
def edge(topology: Topology) -> Iterator[httpx.Client]:
    base = f"http://{topology.bind_host}:{topology.edge.http_port}"
    with httpx.Client(base_url=base, timeout=5.0) as client:
        yield client


@pytest.fixture(scope="session")
def consul(topology: Topology) -> Iterator[ConsulClient]:
    client = ConsulClient(topology.consul_http_addr)
    yield client
    client.close()


@pytest.fixture(scope="session")
def users_grpc(topology: Topology) -> Iterator[users_pb2_grpc.UserServiceStub]:
    """Straight to the users service on loopback, as its own sidecar would call it."""
    with grpc.insecure_channel(f"127.0.0.1:{instance_port(topology, 'users')}") as channel:
        yield users_pb2_grpc.UserServiceStub(channel)


@pytest.fixture(scope="session")
def payments_grpc(topology: Topology) -> Iterator[payments_pb2_grpc.PaymentServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{instance_port(topology, 'payments')}") as channel:
        yield payments_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture(scope="session")
def payments_db(mesh: Mesh):
    """Runs one SQL query against the payments database and returns the rows."""
    password = postgres.passwords(mesh.state, mesh.topology)["payments"]
    url = postgres.database_url(mesh.topology, "payments", password, "payments")

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
def fault(topology: Topology) -> Iterator:
    """Sets fault flags for a test and clears every one it set afterwards."""
    touched: set[str] = set()

    def set_fault(service: str, **kwargs: object) -> None:
        touched.add(service)
        faults.set_fault(topology, service, **kwargs)

    yield set_fault
    for service in touched:
        faults.clear_fault(topology, service)
