"""The L4 balancer in front of the edges (HAProxy, Debian's package) as a native process; its
config comes from mesh/components/balancer.py."""

from __future__ import annotations

from pathlib import Path

import httpx

from mesh.components import balancer
from mesh.placement import Placement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology


def balancer_spec(
    topology: Topology, placement: Placement, state: StateDir, haproxy_bin: Path
) -> ProcessSpec:
    config_file = state.config / "haproxy.cfg"
    stats = f"http://{placement.host(balancer.NAME)}:{topology.balancer_stats_port}"

    def prepare() -> None:
        config_file.write_text(balancer.config(topology, placement))

    def ready() -> str | None:
        """Every edge is UP behind both public ports (so `mesh status` names a missing one)."""
        try:
            csv = httpx.get(f"{stats}{balancer.STATS_PATH};csv", timeout=1.0).text
        except httpx.HTTPError as exc:
            return f"its stats not answering ({exc.__class__.__name__})"
        states = balancer.server_states(csv).items()
        down = sorted({f"{edge} {status}" for (_, edge), status in states if status != "UP"})
        return f"edges not up: {', '.join(down)}" if down else None

    return ProcessSpec(
        name=balancer.NAME,
        # -db: stay in the foreground, logging to stdout (the log file).
        argv=[str(haproxy_bin), "-db", "-f", str(config_file)],
        ports=(topology.edge.http_port, topology.edge.https_port, topology.balancer_stats_port),
        before_start=prepare,
        ready=ready,
        stop_timeout=5,
    )
