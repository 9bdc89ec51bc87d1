"""python -m services.auth: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.auth.app import create_app
from services.auth.config import AuthSettings
from services.common.config import ServiceSettings, service_version
from services.common.consul import registration_body
from services.common.entrypoint import main
from services.common.runner import run


def serve(settings: ServiceSettings) -> int:
    auth_settings = AuthSettings.from_env()
    settings.upstream_port("users")  # a ConfigError now rather than at the first token
    registration = registration_body(settings, version=service_version())
    return run(create_app(settings, auth_settings), settings, registration)


if __name__ == "__main__":
    sys.exit(main("auth", serve))
