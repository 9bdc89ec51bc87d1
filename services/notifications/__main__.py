"""python -m services.notifications: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ServiceSettings
from services.common.entrypoint import main
from services.common.runner import run
from services.notifications.app import create_app


def serve(settings: ServiceSettings) -> int:
    return run(create_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main("notifications", serve))
