"""python -m services.auth: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.auth.app import create_app
from services.auth.config import AuthSettings
from services.common.config import ConfigError, ServiceSettings, service_version
from services.common.consul import registration_body
from services.common.logging import configure_logging
from services.common.runner import run


def main() -> int:
    try:
        settings = ServiceSettings.from_env()
        auth_settings = AuthSettings.from_env()
        settings.upstream_port("users")
    except ConfigError as exc:
        print(f"auth: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.instance, settings.log_level)
    registration = registration_body(settings, version=service_version())
    try:
        return run(create_app(settings, auth_settings), settings, registration)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
