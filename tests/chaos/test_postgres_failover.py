"""The Postgres primary dies (Patroni and its Postgres, SIGKILLed) while orders come through the
edge at about 10 a second: Patroni promotes the synchronous standby, every order acknowledged
with a 201 is still there and ends PAID, charged once; a request caught by the switch is a 503
problem, and its retry with the same Idempotency-Key succeeds afterwards; the old primary comes
back as the standby."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from mesh.runtime import postgres
from mesh.runtime.supervisor import Mesh
from tests.integration.test_messaging_flow import assert_charged_once, wait_all
from tests.integration.test_messaging_flow import workers as workers
from tests.support import wait_for

ORDER_RATE_PER_S = 10
# Each fresh user may send 100 requests a minute through the edge: enough of them for the run.
USERS = 10
PROBLEM = "application/problem+json"


@dataclass
class Attempt:
    key: str
    sent_at: float
    status: int = 0
    content_type: str = ""
    body: str = ""
    order_id: str = ""


def members(mesh: Mesh) -> dict[str, tuple[str, str]]:
    """name -> (role, state), as Patroni reports them."""
    found = postgres.cluster_members(mesh.topology, mesh.placement)
    return {str(m["name"]): (str(m.get("role")), str(m.get("state"))) for m in found}


def leader_and_sync_standby(mesh: Mesh) -> tuple[str, str] | None:
    try:
        current = members(mesh)
    except ConnectionError:
        return None
    leader = [n for n, found in current.items() if found == ("leader", "running")]
    standby = [n for n, found in current.items() if found == ("sync_standby", "streaming")]
    return (leader[0], standby[0]) if leader and standby else None


class OrderLoad:
    """POST /orders at a steady rate from a pool of threads, so a slow answer does not slow the
    rate; every attempt and its answer kept."""

    def __init__(self, clients: list[tuple[str, httpx.Client]]) -> None:
        self.clients = clients
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(32)
        self._futures: list[Future[None]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OrderLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for future in self._futures:
            future.result()
        self._pool.shutdown()

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            user, client = self.clients[n % len(self.clients)]
            attempt = Attempt(key=str(uuid.uuid4()), sent_at=time.monotonic())
            self.attempts.append(attempt)
            self._futures.append(self._pool.submit(self._send, user, client, attempt))
            n += 1
            self._stop.wait(max(0.0, start + n / ORDER_RATE_PER_S - time.monotonic()))

    @staticmethod
    def _send(user: str, client: httpx.Client, attempt: Attempt) -> None:
        resp = client.post("/orders", json=order(user), headers={"Idempotency-Key": attempt.key},
                           timeout=30.0)  # fmt: skip
        attempt.status = resp.status_code
        attempt.content_type = resp.headers.get("content-type", "")
        attempt.body = resp.text
        if resp.status_code == 201:
            attempt.order_id = resp.json()["id"]

    def acknowledged(self) -> int:
        return sum(1 for a in self.attempts if a.status == 201)


def order(user: str) -> dict:
    return {"userId": user, "items": [{"productId": "book", "quantity": 1}]}


@pytest.mark.usefixtures("workers")
def test_orders_acknowledged_while_the_primary_dies_survive_and_are_paid_once(
    mesh: Mesh, edge_as_fresh
) -> None:
    pair = wait_for(lambda: leader_and_sync_standby(mesh), timeout=60,
                    what="a leader with a streaming synchronous standby")  # fmt: skip
    primary, standby = pair
    clients = [(c.user_id, c.http) for c in (edge_as_fresh() for _ in range(USERS))]

    with OrderLoad(clients) as load:
        wait_for(lambda: load.acknowledged() >= 20, timeout=30,
                 what="20 orders acknowledged before the kill")  # fmt: skip
        killed_at = time.monotonic()
        mesh.kill(primary, hold=True)
        try:
            wait_for(lambda: members(mesh).get(standby, ("", ""))[0] == "leader", timeout=60,
                     what=f"{standby} to be promoted", interval=0.2)  # fmt: skip
            promoted_after = time.monotonic() - killed_at
            acknowledged = load.acknowledged()
            wait_for(lambda: load.acknowledged() >= acknowledged + 30, timeout=60,
                     what="30 more orders acknowledged by the new primary")  # fmt: skip
        finally:
            mesh.start(primary, say=lambda _: None)

    rejoined = wait_for(lambda: leader_and_sync_standby(mesh), timeout=120,
                        what=f"{primary} back as the synchronous standby")  # fmt: skip
    assert rejoined == (standby, primary)

    attempts = load.attempts
    failed = [a for a in attempts if a.status != 201]
    assert all(a.status == 503 and a.content_type.startswith(PROBLEM) for a in failed), [
        (a.status, a.body[:200]) for a in failed if a.status != 503
    ]
    after_kill = [a for a in attempts if a.sent_at > killed_at and a.status == 201]
    assert after_kill, "the new primary took orders"

    # A 503 says nothing of whether the order was stored: the client's retry with the same key
    # either finds it or places it, once.
    retried = []
    for n, a in enumerate(attempts):
        if a.status != 201:
            user, client = clients[n % len(clients)]  # the client OrderLoad sent it with
            resp = client.post("/orders", json=order(user), headers={"Idempotency-Key": a.key})
            assert resp.status_code == 201, resp.text
            retried.append(resp.json()["id"])
    ids = [a.order_id for a in attempts if a.status == 201] + retried
    assert len(set(ids)) == len(ids) == len(attempts), "one order per Idempotency-Key"

    wait_all(mesh, ids, "PAID", timeout=120)
    assert_charged_once(mesh, ids)
    outage = [a.sent_at - killed_at for a in failed]
    print(
        f"\n{len(attempts)} orders sent at {ORDER_RATE_PER_S}/s: {len(attempts) - len(failed)} "
        f"acknowledged at once, {len(failed)} 503 problems "
        f"(sent {min(outage, default=0):.1f}..{max(outage, default=0):.1f} s after the kill), "
        f"all {len(ids)} PAID once; {standby} promoted {promoted_after:.1f} s after the kill"
    )


def test_a_primary_the_watchdog_restarts_at_once_takes_orders_again(
    mesh: Mesh, edge_as_fresh
) -> None:
    primary, _ = wait_for(lambda: leader_and_sync_standby(mesh), timeout=60,
                          what="a leader with a streaming synchronous standby")  # fmt: skip
    user, client = edge_as_fresh()
    restarts = mesh.restarts().get(primary, 0)
    killed_at = time.monotonic()
    assert mesh.kill(primary) == [primary]

    def paid() -> bool:
        resp = client.post(
            "/orders", json=order(user), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert resp.status_code == 201 or (
            resp.status_code == 503 and resp.headers["content-type"].startswith(PROBLEM)
        ), resp.text
        return resp.status_code == 201 and resp.json()["status"] == "PAID"

    wait_for(paid, timeout=60, what="an order paid after the primary's crash", interval=1.0)
    back_after = time.monotonic() - killed_at
    wait_for(lambda: mesh.restarts().get(primary, 0) > restarts, timeout=30,
             what=f"the watchdog to count {primary}'s restart")  # fmt: skip
    pair = wait_for(lambda: leader_and_sync_standby(mesh), timeout=120,
                    what="a leader with a streaming synchronous standby again")  # fmt: skip
    print(f"\n{primary} crashed and restarted by the watchdog: an order paid {back_after:.1f} s "
          f"after the kill; now leader {pair[0]}, sync standby {pair[1]}")  # fmt: skip
