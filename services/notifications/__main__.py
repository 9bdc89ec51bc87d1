"""python -m services.notifications: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ConfigError, ServiceSettings, service_version
from services.common.consul import registration_body
from services.common.logging import configure_logging
from services.common.runner import run
from services.notifications.app import create_app


def main() -> int:
    try:
        settings = ServiceSettings.from_env()
    except ConfigError as exc:
        print(f"notifications: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.instance, settings.log_level)
    registration = registration_body(settings, version=service_version())
    try:
        return run(create_app(settings), settings, registration)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
