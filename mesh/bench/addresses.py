"""Which client addresses the edge's per-address limit counts, read from its counters in Redis
during a run (keys `edge_remote_address_<address>_<window>`, one per address and second)."""

from __future__ import annotations

import os
import re
import subprocess
import threading

from mesh.runtime.paths import StateDir
from mesh.topology import Topology

KEY = re.compile(r"^edge_remote_address_(.+)_\d+$")
REDIS_CLI = "redis-cli"  # Debian's redis-tools, which redis-server brings


def counted_addresses(topology: Topology, state: StateDir) -> set[str]:
    password = (state.secrets / "redis-password").read_text().strip()
    argv = [REDIS_CLI, "-h", topology.bind_host, "-p", str(topology.redis_port)]
    proc = subprocess.run(
        [*argv, "--scan", "--pattern", "edge_remote_address_*"],
        capture_output=True,
        text=True,
        timeout=10,
        # The password never goes on a command line.
        env={**os.environ, "REDISCLI_AUTH": password},
    )
    return {m.group(1) for line in proc.stdout.splitlines() if (m := KEY.match(line.strip()))}


class AddressProbe:
    """Looks at the counters `after_s` into a run (each lives about a second)."""

    def __init__(self, topology: Topology, state: StateDir, after_s: float) -> None:
        self.seen: set[str] = set()
        self._timer = threading.Timer(after_s, self._look, args=(topology, state))

    def _look(self, topology: Topology, state: StateDir) -> None:
        self.seen = counted_addresses(topology, state)

    def __enter__(self) -> AddressProbe:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
