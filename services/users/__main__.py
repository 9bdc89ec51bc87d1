"""python -m services.users: read the environment, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from services.common.config import ServiceSettings, service_version
from services.common.consul import registration_body
from services.common.entrypoint import main
from services.common.grpc_server import run
from services.users.app import MIGRATIONS, wiring


def serve(settings: ServiceSettings) -> int:
    registration = registration_body(settings, version=service_version())
    return run(settings, registration, wiring, migrations=MIGRATIONS)


if __name__ == "__main__":
    sys.exit(main("users", serve))
