"""python -m services.auth: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.auth.app import create_app
from services.auth.config import AuthSettings
from services.common.config import ServiceSettings
from services.common.entrypoint import main
from services.common.runner import run


def serve(settings: ServiceSettings) -> int:
    auth_settings = AuthSettings.from_env()
    settings.upstream_port("users")  # a ConfigError now rather than at the first token
    return run(create_app(settings, auth_settings), settings)


if __name__ == "__main__":
    sys.exit(main("auth", serve))
