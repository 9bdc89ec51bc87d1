"""Payment change notifications: one LISTEN connection per process, fanned out to watchers.

Every committed insert or status change of a payment is NOTIFYed on `repository.CHANNEL` with
the payment's new state. `PaymentNotifier` keeps a single dedicated connection LISTENing and
hands each notification to the subscriptions for that payment id or order id. A subscription
must be opened before the current state is read, so no change can slip in between.

Each subscription has a bounded queue; if a watcher falls behind, the oldest queued update is
dropped (the newest state always gets through). After the listening connection is lost and
re-established, every subscription receives RESYNC: notifications may have been missed, so
the watcher reads the current state again. CLOSED means the process is shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import Iterator

import asyncpg

from services.common.db import Connection
from services.common.retry import Backoff, Failure, retry
from services.payments import repository
from services.payments.domain import Payment

log = logging.getLogger(__name__)

QUEUE_SIZE = 16
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 5.0
RECONNECT_MAX_DELAY_S = 5.0
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Signal(enum.Enum):
    RESYNC = "resync"
    CLOSED = "closed"


Update = Payment | Signal


class Subscription:
    """Updates for one payment id or one order id, in commit order."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._queue: asyncio.Queue[Update] = asyncio.Queue(maxsize=QUEUE_SIZE)

    def put(self, update: Update) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            log.warning(
                "payment watcher fell behind; dropped its oldest update", extra={"key": self.key}
            )
        self._queue.put_nowait(update)

    async def next(self, timeout_s: float | None = None) -> Update | None:
        """The next update, or None if none arrives within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None


class PaymentNotifier:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Start listening; returns once the LISTEN is in place."""
        self._task = asyncio.create_task(self._listen_forever(), name="payment notifications")
        async with asyncio.timeout(timeout_s):
            await self._listening.wait()

    async def stop(self) -> None:
        self.close_subscriptions()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def close_subscriptions(self) -> None:
        """Send CLOSED to every subscription, now and from now on (the process is stopping)."""
        self._closed = True
        self._broadcast(Signal.CLOSED)

    @contextlib.contextmanager
    def subscribe(
        self, *, payment_id: uuid.UUID | None = None, order_id: str | None = None
    ) -> Iterator[Subscription]:
        """Updates of the payment with `payment_id`, or of the payment for `order_id`."""
        if (payment_id is None) == (order_id is None):
            raise ValueError("subscribe to exactly one of payment_id or order_id")
        key = _payment_key(payment_id) if payment_id is not None else _order_key(order_id or "")
        subscription = Subscription(key)
        self._subscriptions.setdefault(key, set()).add(subscription)
        if self._closed:
            subscription.put(Signal.CLOSED)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[key]

    def deliver(self, payment: Payment) -> None:
        """Hand `payment`'s new state to the subscriptions for its id and its order."""
        for key in (_payment_key(payment.id), _order_key(payment.order_id)):
            for subscription in self._subscriptions.get(key, ()):
                subscription.put(payment)

    def _broadcast(self, signal: Signal) -> None:
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.put(signal)

    def handle_notification(
        self, _conn: Connection, _pid: int, _channel: str, payload: str
    ) -> None:
        try:
            payment = repository.decode_notification(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("malformed payment notification ignored", extra={"error": str(exc)})
            return
        self.deliver(payment)

    async def _listen_forever(self) -> None:
        reconnecting = False
        while True:
            conn = await retry(
                lambda: asyncpg.connect(self._dsn, timeout=PING_TIMEOUT_S),
                backoff=Backoff(initial_s=0.2, max_s=RECONNECT_MAX_DELAY_S),
                retryable=lambda exc: isinstance(exc, _CONNECTION_ERRORS),
                on_failure=_cannot_connect,
            )
            try:
                await self._listen(conn, reconnecting)
            finally:
                conn.terminate()
            reconnecting = True

    async def _listen(self, conn: asyncpg.Connection, reconnecting: bool) -> None:
        """LISTEN on `conn` until it is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            # The stubs type a notification's payload as object; asyncpg passes the text (str).
            await conn.add_listener(repository.CHANNEL, self.handle_notification)  # type: ignore[arg-type]
            self._listening.set()
            if reconnecting:
                log.info("listening for payment changes again")
                self._broadcast(Signal.RESYNC)
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_INTERVAL_S):
                        await lost.wait()
                if not lost.is_set():
                    await conn.execute("SELECT 1", timeout=PING_TIMEOUT_S)
        except _CONNECTION_ERRORS as exc:
            log.warning(
                "payment notification connection lost",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
            return
        log.warning("payment notification connection lost")


def _cannot_connect(failure: Failure) -> None:
    log.warning(
        "cannot open the payment notification connection",
        extra={
            "error": f"{type(failure.error).__name__}: {failure.error}",
            "retry_in_s": failure.retry_in_s,
        },
    )


def _payment_key(payment_id: uuid.UUID) -> str:
    return f"payment:{payment_id}"


def _order_key(order_id: str) -> str:
    return f"order:{order_id}"
