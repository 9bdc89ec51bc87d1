"""python -m services.users: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ServiceSettings
from services.common.entrypoint import main
from services.common.grpc_server import run
from services.users.app import MIGRATIONS, wiring


def serve(settings: ServiceSettings) -> int:
    return run(settings, wiring, migrations=MIGRATIONS)


if __name__ == "__main__":
    sys.exit(main("users", serve))
