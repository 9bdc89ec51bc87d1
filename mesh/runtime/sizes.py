"""Which topology a state dir runs: the full one (mesh/topology.yaml: two of every instance,
three Consul servers, two Postgres nodes, two edges) or its small variant for small machines
(`mesh up --small`: `Topology.small`, one of each). `mesh up` remembers the choice in the state
dir, so every later command (`mesh status`, `kill`, `down`, the watchdog) sees the processes
`up` started."""

from __future__ import annotations

from pathlib import Path

from mesh.runtime.paths import StateDir, private_files
from mesh.topology import Topology, load

SMALL = "small"
FULL = "full"


def _choice_file(state: StateDir) -> Path:
    return state.root / "topology-size"


def chosen(state: StateDir) -> str:
    try:
        return SMALL if _choice_file(state).read_text().strip() == SMALL else FULL
    except FileNotFoundError:
        return FULL


def choose(state: StateDir, size: str) -> None:
    state.ensure()
    with private_files():
        _choice_file(state).write_text(size)


def topology_for(state: StateDir) -> Topology:
    full = load()
    return full.small() if chosen(state) == SMALL else full
