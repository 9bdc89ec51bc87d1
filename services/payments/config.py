"""Settings of a payment worker, read from the environment: what every process reads
(services.common.config), Kafka's bootstrap servers and, optionally, Consul's address."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ProcessSettings, http_url, process_fields
from services.common.messaging.producer import bootstrap_servers

CONSUL_HTTP_ADDR = "SHOPMESH_CONSUL_HTTP_ADDR"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(ProcessSettings):
    kafka_bootstrap: tuple[str, ...]
    consul_http_addr: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """The worker's settings; ConfigError naming the first missing or malformed variable."""
        source = os.environ if env is None else env
        return cls(
            **process_fields(source),
            kafka_bootstrap=tuple(bootstrap_servers(source)),
            consul_http_addr=(
                http_url(source, CONSUL_HTTP_ADDR)
                if source.get(CONSUL_HTTP_ADDR, "").strip()
                else None
            ),
        )
