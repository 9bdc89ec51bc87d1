"""python -m services.payments.worker: a payment worker (consumer group `payment-workers`).

Workers take PaymentRequested tasks from `payment-tasks` (point-to-point: each task goes to one
worker of the group; partitions are the unit of parallelism) and charge them through the
payments service layer on the payments database, the same idempotent path as the gRPC
ProcessPayment (services.payments.tasks). The worker runs an outbox relay too (one relay
publishes at a time per database), so outcomes reach payment-events even while the payments
API servers are down. Workers also read orders' status changes (order-events) as the consumer
group `payment-cancellations`, and cancel the payment of an order that ended unpaid. What runs
is wired in services.payments.app (`worker_wiring`).

A worker serves nothing and registers nowhere: no port, no sidecar, no upstreams. It reads
SHOPMESH_SERVICE, SHOPMESH_INSTANCE, SHOPMESH_DATABASE_URL, SHOPMESH_KAFKA_BOOTSTRAP (and its
Kafka principal's SHOPMESH_KAFKA_USERNAME, SHOPMESH_KAFKA_PASSWORD_FILE) and optionally
SHOPMESH_LOG_LEVEL, SHOPMESH_BIND_HOST and SHOPMESH_METRICS_PORT (services.payments.config).
SIGTERM/SIGINT stop it gracefully: the task in flight finishes and its offset is committed, the
relay publishes its batch, charges in flight are recorded. Exit code 2 for a configuration error.
"""

from __future__ import annotations

import logging
import sys

import asyncpg

from services.common import event_loop
from services.common.db import close_pool, create_pool
from services.common.entrypoint import main
from services.common.metrics import serve_metrics
from services.common.migrations import apply_migrations
from services.common.runner import stop_on_signals, unless_stopped
from services.payments.app import MIGRATIONS, worker_wiring
from services.payments.config import WorkerSettings

log = logging.getLogger(__name__)


async def run(settings: WorkerSettings) -> int:
    stop = stop_on_signals()
    pool: asyncpg.Pool | None = None

    async def startup() -> None:
        nonlocal pool
        pool = await create_pool(settings.database_url)
        await apply_migrations(pool, MIGRATIONS)

    try:
        if not await unless_stopped(startup(), stop):
            return 0
    except Exception:
        log.exception("startup failed")
        if pool is not None:
            await close_pool(pool)
        return 1
    assert pool is not None
    serve_metrics(settings.bind_host, settings.metrics_port)
    try:
        async with worker_wiring(pool, settings):
            await stop.wait()
            log.info("stopping")
    finally:
        await close_pool(pool)
    log.info("stopped")
    return 0


def serve(settings: WorkerSettings) -> int:
    return event_loop.run(run(settings))


if __name__ == "__main__":
    sys.exit(main("payments-worker", serve, WorkerSettings.from_env))
