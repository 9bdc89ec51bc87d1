"""Orders placed through the edge at a steady rate while a fault lasts, and their accounting:
every answer kept, every 201 order PAID in the end and charged once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from mesh.runtime.supervisor import Mesh
from tests.integration.test_messaging_flow import assert_charged_once, wait_all
from tests.support import FreshClient, wait_for

# The edge allows a user 100 requests a minute: at 10 orders a second over 10 users, each user
# sends 60.
RATE_PER_S = 10.0
USERS = 10


@dataclass
class Answers:
    """What the clients saw: a status code per request, or the exception that ended it."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    order_ids: list[str] = field(default_factory=list)
    # When each error came (time.monotonic()): how long one lasted after a fault ended.
    error_times: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def errors(self) -> int:
        """What a client would call an error: a 5xx or no answer at all."""
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        return server_errors + sum(self.failures.values())

    def summary(self) -> str:
        return (
            f"{self.errors} errors of {self.total} orders "
            f"(statuses {dict(self.statuses)}, failures {dict(self.failures)})"
        )


class OrderLoad:
    """POST /orders through the edge at RATE_PER_S, round robin over fresh users, from start
    until stop; each request on a pool thread, so a slow answer does not slow the rate."""

    def __init__(self, clients: list[FreshClient]) -> None:
        self._clients = clients
        self._answers = Answers()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(32)
        self._pacer = threading.Thread(target=self._pace, daemon=True)

    def __enter__(self) -> OrderLoad:
        self._pacer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answered(self) -> int:
        with self._lock:
            return self._answers.total

    def errors_so_far(self) -> int:
        with self._lock:
            return self._answers.errors

    def wait_answered(self, n: int, *, what: str) -> None:
        """Until `n` requests have been answered (or failed) in all."""
        wait_for(lambda: self.answered() >= n, timeout=n / RATE_PER_S * 4 + 30, what=what)

    def stop(self) -> Answers:
        self._stopping.set()
        self._pacer.join()
        self._pool.shutdown(wait=True)
        return self._answers

    def _pace(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self._stopping.is_set():
            client = self._clients[sent % len(self._clients)]
            self._pool.submit(self._place, client)
            sent += 1
            # An open model: the next request's time is fixed, whatever the answers take.
            self._stopping.wait(max(0.0, started + sent / RATE_PER_S - time.monotonic()))

    def _place(self, client: FreshClient) -> None:
        order = {"userId": client.user_id, "items": [{"productId": "book", "quantity": 1}]}
        # Each order its own key, as a careful client sends: the mesh may then retry it on
        # another instance (docs/mesh-config.md); this client itself never retries.
        key = {"Idempotency-Key": f"load-{uuid.uuid4().hex}"}
        try:
            resp = client.http.post("/orders", json=order, headers=key, timeout=15.0)
        except httpx.HTTPError as exc:
            with self._lock:
                self._answers.failures[exc.__class__.__name__] += 1
                self._answers.error_times.append(time.monotonic())
            return
        with self._lock:
            self._answers.statuses[resp.status_code] += 1
            if resp.status_code >= 500:
                self._answers.error_times.append(time.monotonic())
            if resp.status_code == 201:
                self._answers.order_ids.append(resp.json()["id"])


def assert_every_order_paid_once(mesh: Mesh, answers: Answers) -> None:
    """Every order the clients were given (201) ends PAID, charged once."""
    assert answers.order_ids, answers.summary()
    wait_all(mesh, answers.order_ids, "PAID", timeout=90)
    assert_charged_once(mesh, answers.order_ids)
