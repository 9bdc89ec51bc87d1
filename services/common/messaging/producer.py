"""The Kafka producer every service uses: acks from all in-sync replicas, idempotent, signed in
as the service's principal (services.common.messaging.security)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from services.common.config import ConfigError
from services.common.messaging.security import sasl_options

BOOTSTRAP_ENV = "SHOPMESH_KAFKA_BOOTSTRAP"

PRODUCER_DEFAULTS: dict[str, Any] = {
    # Durable: the leader answers once every in-sync replica has the batch (min.insync.replicas
    # is 2 on the cluster), and broker-side sequence numbers drop retried duplicates and keep
    # per-partition order (aiokafka sends one batch per partition at a time).
    "acks": "all",
    "enable_idempotence": True,
    # Small batches, sent promptly: the outbox relay awaits every batch it sends.
    "linger_ms": 5,
    "max_batch_size": 64 * 1024,
    # A batch that cannot be delivered in this time fails (the relay then backs off and retries).
    "request_timeout_ms": 15_000,
    "retry_backoff_ms": 200,
    "metadata_max_age_ms": 60_000,
}


def bootstrap_servers(env: Mapping[str, str] | None = None) -> list[str]:
    """`SHOPMESH_KAFKA_BOOTSTRAP` as a list of host:port; ConfigError if missing or malformed."""
    source = os.environ if env is None else env
    raw = source.get(BOOTSTRAP_ENV, "").strip()
    if not raw:
        raise ConfigError(f"{BOOTSTRAP_ENV} is required but not set")
    servers = []
    for entry in (part.strip() for part in raw.split(",")):
        host, sep, port = entry.rpartition(":")
        if not entry or not sep or not host or not (port.isascii() and port.isdigit()):
            raise ConfigError(f"{BOOTSTRAP_ENV} must be comma-separated host:port, got {raw!r}")
        if not 1 <= int(port) <= 65535:
            raise ConfigError(f"{BOOTSTRAP_ENV}: {entry!r} has no valid port")
        servers.append(entry)
    return servers


def create_producer(
    servers: list[str] | None = None,
    *,
    client_id: str | None = None,
    security: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AIOKafkaProducer:
    """A configured, not yet started producer (call `await producer.start()`).

    `servers` defaults to `SHOPMESH_KAFKA_BOOTSTRAP`, `security` to the environment's
    `sasl_options`; `overrides` replace the defaults above. Must be called with an event loop
    running.
    """
    settings = {
        **PRODUCER_DEFAULTS,
        **(sasl_options() if security is None else security),
        **overrides,
    }
    return AIOKafkaProducer(
        bootstrap_servers=servers or bootstrap_servers(), client_id=client_id, **settings
    )
