"""Orders placed through the edge at a steady rate while a fault lasts, and their accounting.

The stream sends POST /orders on a fixed schedule (an open model: a slow answer does not slow
the schedule down), each with an Idempotency-Key of its own and no client retry, so every error
a client would see is counted. The users are fresh ones (tests/conftest.py `edge_as_fresh`), one
after another, so no user's per-minute edge budget runs out.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from tests.support import FreshClient

ITEMS = [{"productId": "book", "quantity": 1}]
REQUEST_TIMEOUT_S = 15.0


@dataclass
class Outcome:
    """What the clients saw: orders accepted (201/202), and every answer by status, transport
    errors by exception name."""

    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.answers.values())

    @property
    def errors(self) -> int:
        return self.sent - len(self.accepted)

    @property
    def error_ratio(self) -> float:
        return self.errors / self.sent if self.sent else 0.0

    def __str__(self) -> str:
        return (
            f"{self.sent} sent, {len(self.accepted)} accepted, {self.errors} errors "
            f"({self.error_ratio:.2%}): {dict(self.answers)}"
        )


class OrderStream:
    def __init__(self, clients: list[FreshClient], rate_per_s: float = 10.0) -> None:
        self._clients = clients
        self._interval_s = 1.0 / rate_per_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="order-stream")
        self._pending: list[Future[None]] = []
        self._thread = threading.Thread(target=self._schedule, name="order-stream", daemon=True)
        self.outcome = Outcome()

    def __enter__(self) -> OrderStream:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        for pending in self._pending:
            pending.result()
        self._pool.shutdown()

    @property
    def sent(self) -> int:
        with self._lock:
            return self.outcome.sent

    def _schedule(self) -> None:
        due = time.monotonic()
        n = 0
        while not self._stop.is_set():
            client = self._clients[n % len(self._clients)]
            self._pending.append(self._pool.submit(self._place, client))
            n += 1
            due += self._interval_s
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _place(self, client: FreshClient) -> None:
        body = {"userId": client.user_id, "items": ITEMS}
        headers = {"Idempotency-Key": f"stream-{uuid.uuid4().hex}"}
        try:
            resp = client.http.post(
                "/orders", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            self._record(type(exc).__name__, None, None)
            return
        accepted = resp.json()["id"] if resp.status_code in (201, 202) else None
        problem = None
        if accepted is None:
            problem = f"{resp.status_code} {resp.headers.get('content-type')} {resp.text[:200]}"
        self._record(str(resp.status_code), accepted, problem)

    def _record(self, answer: str, accepted: str | None, problem: str | None) -> None:
        with self._lock:
            self.outcome.answers[answer] += 1
            if accepted is not None:
                self.outcome.accepted.append(accepted)
            if problem is not None:
                self.outcome.problems.append(problem)
