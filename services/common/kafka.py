"""A service's Kafka wiring: its outbox relay and consumer runners, started and stopped together.

    async with messaging(pool, settings.instance, relay=True, consumers=[
        Consumer((Topic.USER_EVENTS, Topic.PAYMENT_EVENTS), "orders", handler),
    ]):
        ...  # serve

Kafka is required: `SHOPMESH_KAFKA_BOOTSTRAP` and the service's principal
(services.common.messaging.security) must be set (ConfigError otherwise). Neither the
relay nor the consumers need Kafka to be up when the service starts: both retry in the
background, and the outbox keeps every event until the relay has published it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from services.common.messaging.consumer import ConsumerRunner
from services.common.messaging.outbox import OutboxRelay
from services.common.messaging.processed import Handler
from services.common.messaging.processor import RetryPolicy
from services.common.messaging.producer import bootstrap_servers, create_producer
from services.common.messaging.security import sasl_options
from services.common.metrics import MessagingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consumer:
    """Topics consumed by one consumer group, and the handler of their events."""

    topics: tuple[str, ...]
    group_id: str
    handler: Handler
    max_attempts: int = 3


@dataclass
class Messaging:
    relay: OutboxRelay | None
    runners: list[ConsumerRunner]


@asynccontextmanager
async def messaging(
    pool: asyncpg.Pool,
    instance: str,
    *,
    relay: bool = False,
    consumers: Sequence[Consumer] = (),
    servers: list[str] | None = None,
    service: str | None = None,
) -> AsyncIterator[Messaging]:
    """Start the outbox relay (if `relay`) and one runner per consumer; stop them on exit.

    Consumers stop first (each finishes and commits its message in flight), then the relay
    publishes its batch in flight and closes its producer. Their metrics carry the label
    `service`: by default the instance id without its `-<n>` (`orders-1`: `orders`).
    """
    servers = servers or bootstrap_servers()
    security = sasl_options()
    metrics = MessagingMetrics(service or instance.rpartition("-")[0] or instance)
    outbox_relay = (
        OutboxRelay(
            pool,
            lambda: create_producer(servers, client_id=instance, security=security),
            metrics=metrics,
        )
        if relay
        else None
    )
    runners = [
        ConsumerRunner(
            list(consumer.topics),
            consumer.group_id,
            consumer.handler,
            pool,
            bootstrap=servers,
            security=security,
            client_id=instance,
            retries=RetryPolicy(max_attempts=consumer.max_attempts),
            metrics=metrics,
        )
        for consumer in consumers
    ]
    started: list[ConsumerRunner] = []
    try:
        if outbox_relay is not None:
            await outbox_relay.start()
        for runner in runners:
            await runner.start()
            started.append(runner)
        log.info(
            "messaging started",
            extra={
                "relay": outbox_relay is not None,
                "consumers": [f"{r.group_id}:{','.join(r.topics)}" for r in runners],
            },
        )
        yield Messaging(outbox_relay, runners)
    finally:
        for runner in reversed(started):
            await runner.stop()
        if outbox_relay is not None:
            await outbox_relay.stop()
