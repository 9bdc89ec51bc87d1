"""Postgres killed under the running mesh, both nodes of its Patroni cluster at once: the edge
answers 503 problems, not 500s or hangs, and every service, consumer and worker carries on once
it is back, without a restart (one node lost: test_postgres_failover.py)."""

from __future__ import annotations

import httpx

from mesh.components.consul import ConsulClient
from mesh.runtime.supervisor import Mesh
from tests.integration.test_messaging_flow import wait_all
from tests.support import wait_for

ORDER = {"userId": "bob", "items": [{"productId": "book", "quantity": 1}]}
PROBLEM = "application/problem+json"


def is_problem(resp: httpx.Response, status: int) -> bool:
    return resp.status_code == status and resp.headers.get("content-type", "").startswith(PROBLEM)


def test_while_postgres_is_down_the_edge_answers_503_problems_and_all_recovers_after(
    mesh: Mesh, edge_as, consul: ConsulClient
) -> None:
    bob = edge_as("bob")  # not alice: her per-minute edge limit is shared with the other tests
    before = bob.post("/orders", json=ORDER)
    assert before.status_code == 201 and before.json()["status"] == "PAID", before.text
    order_id = before.json()["id"]
    pids = {
        name: run.pid for name, run in mesh.running().items() if not name.startswith("postgres-")
    }

    mesh.kill("postgres", hold=True)
    try:
        during = [bob.get(f"/orders/{order_id}"), bob.post("/orders", json=ORDER)]
        during += [bob.get(f"/orders/{order_id}") for _ in range(3)]
        assert all(is_problem(r, 503) for r in during), [(r.status_code, r.text) for r in during]
    finally:
        mesh.start("postgres", say=lambda _: None)

    for instance in [i.id for i in mesh.topology.instances()]:
        wait_for(lambda i=instance: consul.agent_health(i) == "passing", timeout=30,
                 what=f"{instance} to pass its health check again")  # fmt: skip
    after = {
        name: run.pid for name, run in mesh.running().items() if not name.startswith("postgres-")
    }
    assert after == pids, "nothing but Postgres was restarted to recover"

    wait_for(lambda: bob.post("/orders", json=ORDER).json().get("status") == "PAID", timeout=30,
             what="orders to be paid synchronously again", interval=1.0)  # fmt: skip
    queued = bob.post("/orders", json=ORDER, headers={"Prefer": "respond-async"})
    assert queued.status_code == 202, queued.text
    wait_all(mesh, [queued.json()["id"]], "PAID", timeout=60)
    assert bob.get(f"/orders/{order_id}").json()["status"] == "PAID"
