"""The shared `python -m services.<name>` start: configuration, JSON logs, tracing, exit codes.

Exit codes: 2 for a configuration error (printed as one line, no traceback), 0 for a clean
stop (SIGTERM, SIGINT, Ctrl-C), otherwise what the server returns.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar, overload

from services.common.config import ConfigError, ProcessSettings, ServiceSettings
from services.common.logging import configure_logging
from services.common.telemetry import setup

S = TypeVar("S", bound=ProcessSettings)


# `serve` takes what `read_settings` returns: a service's settings unless told otherwise. (A
# default for a parameter typed with S cannot be checked, hence the overloads.)
@overload
def main(name: str, serve: Callable[[ServiceSettings], int]) -> int: ...
@overload
def main(name: str, serve: Callable[[S], int], read_settings: Callable[[], S]) -> int: ...
def main(
    name: str,
    serve: Callable[[Any], int],
    read_settings: Callable[[], ProcessSettings] = ServiceSettings.from_env,
) -> int:
    """Read the settings (a service's by default), configure logging and tracing, then `serve`;
    `serve` may raise ConfigError too. Spans still queued are flushed on the way out."""
    try:
        settings = read_settings()
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.service, settings.instance, settings.log_level)
    telemetry = setup(settings.service, settings.instance)
    try:
        return serve(settings)
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        telemetry.shutdown()
