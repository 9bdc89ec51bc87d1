"""Kafka between the services, on the real 3-broker cluster: pub/sub (user-events to every
subscribing group, each effect once), point-to-point (payment-tasks to the payment workers,
each task charged once), per-key order through the outbox and the consumers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import grpc
import httpx
import pytest

from mesh.components import postgres
from mesh.runtime.paths import REPO_ROOT
from mesh.runtime.supervisor import Mesh, native_wiring, service_env
from mesh.wiring import kafka_env
from services.auth.app import cache_group
from services.common.messaging.processed import PROCESSED_RETENTION_S, PgProcessedStore
from shopmesh.payments.v1 import payments_pb2
from shopmesh.users.v1 import users_pb2
from tests.support import instance_port, wait_for

WORKERS = ("payments-worker-1", "payments-worker-2")
ITEMS = [{"productId": "book", "quantity": 1}]


# -- helpers (imported by tests/chaos/test_kafka_failures.py) ----------------------------------


def query(mesh: Mesh, database: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """One SQL query against a service's database."""
    password = postgres.passwords(mesh.state, mesh.topology)[database]
    url = postgres.database_url(mesh.topology, mesh.placement, database, password, database)

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


class Workers:
    """The two payment workers: the runtime's processes when it runs them, else processes of
    this test session started the way the runtime is asked to (same env, no port)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.managed = all(name in mesh.names() for name in WORKERS)
        self._procs: dict[str, subprocess.Popen] = {}

    def env(self, name: str) -> dict[str, str]:
        payments = self.mesh.topology.service("payments").instances[0]
        base = service_env(self.mesh.topology, self.mesh.state, payments)
        env = {"SHOPMESH_DATABASE_URL": base["SHOPMESH_DATABASE_URL"]}
        wiring = native_wiring(self.mesh.topology, self.mesh.state)
        env |= kafka_env(self.mesh.topology, wiring, "payments-worker")
        env |= {
            "SHOPMESH_SERVICE": "payments-worker",
            "SHOPMESH_INSTANCE": name,
            "SHOPMESH_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
        return {**os.environ, **env}

    def start(self, name: str) -> None:
        if self.managed:
            self.mesh.start(name, say=lambda _: None)
            return
        if name in self._procs and self._procs[name].poll() is None:
            return
        log = open(self.mesh.state.root / f"{name}.test.log", "ab")  # noqa: SIM115
        self._procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.payments.worker"],
            env=self.env(name),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        if self.managed:
            self.mesh.kill(name)
            return
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        if self.managed:
            return
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


_RUNNING: dict[int, Workers] = {}


@pytest.fixture(scope="session")
def workers(mesh: Mesh):
    """The two workers, running (one set per session, whichever module asks first)."""
    running = _RUNNING.setdefault(id(mesh), Workers(mesh))
    for name in WORKERS:
        running.start(name)
    yield running
    running.stop_all()


def orders_client(mesh: Mesh, tokens, user: str) -> httpx.Client:
    """Straight to orders-1 (not through the edge: no per-user rate limit), as `user`."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{instance_port(mesh.topology, 'orders')}",
        headers={"Authorization": f"Bearer {tokens.internal(user)}"},
        timeout=15.0,
    )


def place(client: httpx.Client, user: str, *, respond_async: bool) -> dict:
    headers = {"Prefer": "respond-async"} if respond_async else {}
    resp = client.post("/orders", json={"userId": user, "items": ITEMS}, headers=headers)
    assert resp.status_code == (202 if respond_async else 201), resp.text
    return resp.json()


def place_many(client: httpx.Client, user: str, n: int, *, respond_async: bool) -> list[dict]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: place(client, user, respond_async=respond_async), range(n)))


def order_statuses(mesh: Mesh, ids: list[str]) -> dict[str, str]:
    rows = query(mesh, "orders", "SELECT id, status FROM orders WHERE id = ANY($1::uuid[])", ids)
    return {str(r["id"]): r["status"] for r in rows}


def wait_all(mesh: Mesh, ids: list[str], status: str, timeout: float) -> None:
    def done() -> bool:
        statuses = order_statuses(mesh, ids)
        return len(statuses) == len(ids) and set(statuses.values()) == {status}

    wait_for(done, timeout=timeout, what=f"{len(ids)} orders to become {status}", interval=0.5)


def payments_by_order(mesh: Mesh, ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = query(
        mesh,
        "payments",
        "SELECT order_id, status, charged_by FROM payments WHERE order_id = ANY($1::text[])",
        ids,
    )
    found: dict[str, list] = {}
    for row in rows:
        found.setdefault(row["order_id"], []).append(row)
    return found


def events_for(mesh: Mesh, database: str, key: str, kind: str) -> list[asyncpg.Record]:
    return query(
        mesh,
        database,
        "SELECT event_id FROM outbox WHERE key = $1 AND payload->>'type' = $2",
        key,
        kind,
    )


def assert_charged_once(mesh: Mesh, ids: list[str]) -> Counter:
    """One SUCCEEDED payment per order and one PaymentSucceeded event; charges per instance."""
    payments = payments_by_order(mesh, ids)
    assert sorted(payments) == sorted(ids)
    assert all(len(rows) == 1 and rows[0]["status"] == "SUCCEEDED" for rows in payments.values())
    succeeded = query(
        mesh,
        "payments",
        "SELECT key, count(*) AS n FROM outbox WHERE key = ANY($1::text[]) "
        "AND payload->>'type' = 'shopmesh.payment.succeeded.v1' GROUP BY key",
        ids,
    )
    assert {r["key"]: r["n"] for r in succeeded} == dict.fromkeys(ids, 1)
    return Counter(rows[0]["charged_by"] for rows in payments.values())


# -- pub/sub -----------------------------------------------------------------------------------


def test_a_user_blocked_once_takes_effect_once_in_every_subscribing_service(
    mesh: Mesh, users_grpc, payments_grpc
) -> None:
    user = users_grpc.CreateUser(
        users_pb2.CreateUserRequest(name="Eve", email=f"eve-{uuid.uuid4().hex[:8]}@example.org")
    )
    # Two unsettled orders of the user (written directly: no worker may pay them first).
    pending = [str(uuid.uuid4()) for _ in range(2)]
    for order_id, status in zip(pending, ("PENDING", "PAYMENT_PENDING"), strict=True):
        query(
            mesh,
            "orders",
            "INSERT INTO orders (id, user_id, status, items, total_price, currency) "
            "VALUES ($1, $2, $3, $4::jsonb, 100, 'RUB')",
            uuid.UUID(order_id),
            user.id,
            status,
            json.dumps([{"product_id": "book", "quantity": 1}]),
        )

    users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user.id, reason="fraud"))
    users_grpc.BlockUser(users_pb2.BlockUserRequest(user_id=user.id, reason="again"))

    blocked = events_for(mesh, "users", user.id, "shopmesh.user.blocked.v1")
    assert len(blocked) == 1, "a second BlockUser changes nothing and emits nothing"
    event_id = blocked[0]["event_id"]
    auth_groups = [("auth", cache_group(i.id)) for i in mesh.topology.service("auth").instances]
    for database, group in [
        ("orders", "orders"),
        ("payments", "payments"),
        ("notifications", "notifications"),
        *auth_groups,
    ]:
        wait_for(
            lambda d=database, g=group: query(
                mesh,
                d,
                "SELECT 1 FROM processed_events WHERE consumer_group = $1 AND event_id = $2",
                g,
                event_id,
            ),
            timeout=60,
            what=f"group {group} to handle the UserBlocked event",
            interval=0.3,
        )
        rows = query(
            mesh,
            database,
            "SELECT count(*) AS n FROM processed_events WHERE consumer_group = $1 "
            "AND event_id = $2",
            group,
            event_id,
        )
        assert rows[0]["n"] == 1, group

    assert set(order_statuses(mesh, pending).values()) == {"CANCELLED"}
    cancel_events = query(
        mesh,
        "orders",
        "SELECT count(*) AS n FROM outbox WHERE key = ANY($1::text[]) "
        "AND payload->'data'->>'status' = 'CANCELLED'",
        pending,
    )
    assert cancel_events[0]["n"] == 2

    with pytest.raises(grpc.RpcError) as refused:
        payments_grpc.ProcessPayment(
            payments_pb2.ProcessPaymentRequest(
                order_id=str(uuid.uuid4()), user_id=user.id, amount=100, currency="RUB"
            ),
            timeout=5,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "user is blocked" in refused.value.details()

    notes = query(
        mesh,
        "notifications",
        "SELECT id FROM notifications WHERE user_id = $1 AND type = 'shopmesh.user.blocked.v1'",
        user.id,
    )
    assert [n["id"] for n in notes] == [event_id]


# -- point-to-point ----------------------------------------------------------------------------


def test_respond_async_orders_are_all_paid_each_by_exactly_one_worker(
    mesh: Mesh, tokens, workers
) -> None:
    with orders_client(mesh, tokens, "bob") as client:
        resp = client.post(
            "/orders", json={"userId": "bob", "items": ITEMS}, headers={"Prefer": "respond-async"}
        )
        assert resp.status_code == 202
        assert resp.headers["Preference-Applied"] == "respond-async"
        assert resp.headers["Location"] == f"/orders/{resp.json()['id']}"
        assert resp.json()["status"] == "PAYMENT_PENDING"
        orders = [resp.json(), *place_many(client, "bob", 39, respond_async=True)]
    ids = [o["id"] for o in orders]
    assert {o["status"] for o in orders} == {"PAYMENT_PENDING"}

    wait_all(mesh, ids, "PAID", timeout=90)

    per_worker = assert_charged_once(mesh, ids)
    print(f"40 queued orders charged per worker: {dict(per_worker)}")
    assert set(per_worker) == set(WORKERS), per_worker
    assert min(per_worker.values()) > 0


def test_status_changes_of_one_order_reach_notifications_in_order(
    mesh: Mesh, tokens, workers
) -> None:
    with orders_client(mesh, tokens, "bob") as client:
        orders = place_many(client, "bob", 5, respond_async=True)
    ids = [o["id"] for o in orders]
    wait_all(mesh, ids, "PAID", timeout=60)

    def delivered(order_id: str) -> list[str]:
        rows = query(
            mesh,
            "notifications",
            "SELECT data->>'status' AS status FROM notifications "
            "WHERE type = 'shopmesh.order.status_changed.v1' AND data->>'orderId' = $1 "
            "ORDER BY created_at, id",
            order_id,
        )
        return [r["status"] for r in rows]

    for order_id in ids:
        wait_for(
            lambda o=order_id: len(delivered(o)) == 2,
            timeout=30,
            what=f"both status changes of order {order_id} in notifications",
        )
        assert delivered(order_id) == ["PAYMENT_PENDING", "PAID"]


def test_the_sync_path_emits_one_payment_event_even_when_repeated(
    mesh: Mesh, tokens, payments_grpc
) -> None:
    with orders_client(mesh, tokens, "bob") as client:
        order = place(client, "bob", respond_async=False)
    assert order["status"] == "PAID"
    request = payments_pb2.ProcessPaymentRequest(
        order_id=order["id"], user_id="bob", amount=order["totalPrice"], currency="RUB"
    )
    for _ in range(3):
        assert payments_grpc.ProcessPayment(request, timeout=5).id == order["paymentId"]
    # The outbox row is written in the same transaction as the status change: whatever a
    # repeated call emitted would already be there when the call returned.
    assert len(events_for(mesh, "payments", order["id"], "shopmesh.payment.succeeded.v1")) == 1
    assert len(payments_by_order(mesh, [order["id"]])[order["id"]]) == 1


def test_processed_events_older_than_the_dedupe_window_are_pruned_and_newer_ones_kept(
    mesh: Mesh,
) -> None:
    group = f"prune-test-{uuid.uuid4().hex[:8]}"
    old, recent = uuid.uuid4(), uuid.uuid4()
    query(mesh, "orders",
          "INSERT INTO processed_events (consumer_group, event_id, processed_at) VALUES "
          "($1, $2, now() - interval '9 days'), ($1, $3, now() - interval '7 days')",
          group, old, recent)  # fmt: skip
    password = postgres.passwords(mesh.state, mesh.topology)["orders"]
    url = postgres.database_url(mesh.topology, mesh.placement, "orders", password, "orders")

    async def prune() -> int:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            return await PgProcessedStore(pool).prune(group, PROCESSED_RETENTION_S)
        finally:
            await pool.close()

    assert asyncio.run(prune()) == 1
    left = query(mesh, "orders", "SELECT event_id FROM processed_events WHERE consumer_group = $1",
                 group)  # fmt: skip
    assert [row["event_id"] for row in left] == [recent]
    query(mesh, "orders", "DELETE FROM processed_events WHERE consumer_group = $1", group)
