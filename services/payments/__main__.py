"""python -m services.payments: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, ServiceSettings, service_version
from services.common.consul import grpc_check, registration_body
from services.common.grpc_server import run
from services.common.logging import configure_logging
from services.payments.app import MIGRATIONS, wiring


def main() -> int:
    try:
        settings = ServiceSettings.from_env()
    except ConfigError as exc:
        print(f"payments: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.instance, settings.log_level)
    registration = registration_body(settings, version=service_version(), check=grpc_check)
    try:
        return run(settings, registration, wiring, migrations=MIGRATIONS)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
