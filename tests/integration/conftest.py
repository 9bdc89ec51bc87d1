"""One real native mesh per test session, started through the same code path as `mesh up`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.runtime.consul import ConsulClient
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.runtime.provision import install_all
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology, load

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


def envoy_admin(topology: Topology, port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://{topology.bind_host}:{port}", timeout=2.0)
