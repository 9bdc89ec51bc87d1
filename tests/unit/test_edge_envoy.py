"""The pinned Envoy itself accepts the edge config the topology generates (`--mode validate`:
the config is loaded and checked, nothing listens). Skipped until `mesh install` has put
Envoy in the cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mesh.components.edge import EdgeFiles, envoy_config
from mesh.placement import NativePlacement
from mesh.runtime import envoy_admin, protos
from mesh.runtime.paths import StateDir, cache_dir
from mesh.runtime.provision import ENVOY
from mesh.runtime.tls import ensure_edge_certs
from mesh.topology import load


def envoy_binary() -> Path:
    if not ENVOY.is_installed(cache_dir()):
        pytest.fail("Envoy is not in the cache: run `mesh install` (make test does) first")
    return ENVOY.binaries(cache_dir())["envoy"]


def edge_config_file(tmp_path: Path) -> Path:
    topology = load()
    placement = NativePlacement.of(topology)
    state = StateDir(tmp_path)
    certs = ensure_edge_certs(state, placement.public())
    socket = envoy_admin.socket_path(state, "edge-1")
    files = EdgeFiles(certs.server_cert, certs.server_key, protos.DESCRIPTOR_SET, socket)
    path = tmp_path / "edge-envoy.json"
    edge = topology.edge.instances[0]
    path.write_text(json.dumps(envoy_config(topology, placement, files, edge)))
    return path


def test_envoy_accepts_the_generated_edge_config(tmp_path: Path) -> None:
    envoy = envoy_binary()
    proc = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(edge_config_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
