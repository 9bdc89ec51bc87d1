"""Settings of a payment worker, read from the environment: what every process reads
(services.common.config) and Kafka's bootstrap servers. A worker asks Consul nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ProcessSettings, process_fields
from services.common.messaging.producer import bootstrap_servers


@dataclass(frozen=True, kw_only=True)
class WorkerSettings(ProcessSettings):
    kafka_bootstrap: tuple[str, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """The worker's settings; ConfigError naming the first missing or malformed variable."""
        source = os.environ if env is None else env
        return cls(
            **process_fields(source),
            kafka_bootstrap=tuple(bootstrap_servers(source)),
        )
