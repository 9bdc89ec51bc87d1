from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mesh.compose.document import document
from mesh.go_memory import GO_ENV
from mesh.placement import ComposePlacement
from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.topology import load

GO_COMPONENTS = ("prometheus", "jaeger")


def go_process_names() -> list[str]:
    topology = load()
    return [*(s.name for s in topology.consul_servers), "consul", *GO_COMPONENTS]


def test_every_go_process_of_the_native_mesh_collects_its_garbage_at_go_env(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    binaries = defaultdict(lambda: defaultdict(lambda: Path("/bin/true")))
    specs = {spec.name: spec for spec in Mesh(load(), state, binaries).specs()}
    for name in go_process_names():
        assert specs[name].env.items() >= GO_ENV.items(), name


def test_every_go_container_of_compose_collects_its_garbage_at_go_env() -> None:
    topology = load()
    services = document(topology, ComposePlacement.of(topology))["services"]
    for name in go_process_names():
        assert services[name]["environment"].items() >= GO_ENV.items(), name
