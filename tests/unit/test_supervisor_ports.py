"""Every port the topology gives out is checked free before the process that opens it starts,
so a leftover process is named instead of making the new one exit during start-up."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.topology import load


def test_every_port_but_the_shared_upstream_listeners_is_checked_by_its_process(
    tmp_path: Path,
) -> None:
    topology = load()
    state = StateDir(tmp_path)
    state.ensure()
    binaries = defaultdict(lambda: defaultdict(lambda: Path("/bin/true")))
    checked = [port for spec in Mesh(topology, state, binaries).specs() for port in spec.ports]

    expected = {
        port for name, port in topology.all_ports().items() if not name.endswith(" upstream")
    }
    assert sorted(checked) == sorted(expected)
