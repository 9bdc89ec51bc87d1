"""python -m services.web: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ServiceSettings
from services.common.entrypoint import main
from services.common.runner import run
from services.web.app import create_app


def serve(settings: ServiceSettings) -> int:
    return run(create_app(settings), settings)


def read_settings() -> ServiceSettings:
    # The web service keeps nothing: no database.
    return ServiceSettings.from_env(database=False)


if __name__ == "__main__":
    sys.exit(main("web", serve, read_settings))
