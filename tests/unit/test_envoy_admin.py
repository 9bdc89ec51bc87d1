"""Where the native Envoys' admin APIs are: owner-only Unix sockets, never TCP ports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mesh.components import consul
from mesh.placement import NativePlacement
from mesh.runtime import envoy_admin
from mesh.runtime.envoy_admin import MAX_SOCKET_PATH, AdminDirError
from mesh.runtime.paths import StateDir
from mesh.topology import load

# What `consul connect envoy -bootstrap` prints, trimmed to what the patch touches.
CONSUL_BOOTSTRAP = {
    "admin": {
        "access_log_path": "/dev/null",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 19000}},
    },
    "static_resources": {
        "clusters": [
            {"name": "local_agent", "type": "STATIC"},
            {
                "name": "self_admin",
                "type": "STATIC",
                "loadAssignment": {
                    "clusterName": "self_admin",
                    "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": 19000}}}}]}],
                },
            },
        ],
        "listeners": [{"name": "envoy_prometheus_metrics_listener"}],
    },
}  # fmt: skip


def test_a_sidecars_admin_api_and_its_metrics_cluster_move_to_the_socket() -> None:
    socket = Path("/state/admin/orders-1-sidecar.sock")
    patched = consul.with_admin_socket(CONSUL_BOOTSTRAP, socket)
    assert patched["admin"] == {
        "access_log_path": "/dev/null",
        "address": {"pipe": {"path": str(socket), "mode": 0o600}},
    }
    self_admin = patched["static_resources"]["clusters"][1]["loadAssignment"]
    endpoint = self_admin["endpoints"][0]["lbEndpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": str(socket)}}
    assert "socket_address" in CONSUL_BOOTSTRAP["admin"]["address"], "the input is left as it was"


def test_a_native_sidecar_gives_free_memory_back_as_the_edge_does() -> None:
    socket = Path("/state/admin/orders-1-sidecar.sock")
    patched = consul.native_bootstrap(CONSUL_BOOTSTRAP, socket)
    assert patched["memory_allocator_manager"] == {
        "bytes_to_release": str(16 << 20),
        "memory_release_interval": "1s",
    }
    assert patched["admin"] == consul.with_admin_socket(CONSUL_BOOTSTRAP, socket)["admin"]
    assert "memory_allocator_manager" not in CONSUL_BOOTSTRAP, "the input is left as it was"


def test_a_compose_sidecar_gives_free_memory_back_as_a_native_one_does() -> None:
    topology = load()
    instance = topology.service("orders").instances[0]
    connect = consul.ConnectEnvoy(instance.id, Path("consul"), Path("/ca.pem"), Path("/token"))
    argv = consul.sidecar_argv(
        topology, NativePlacement.of(topology), connect, admin_port=19100, envoy_bin=Path("envoy")
    )
    envoy_flags = argv[argv.index("--") + 1 :]
    merged = json.loads(envoy_flags[envoy_flags.index("--config-yaml") + 1])
    native = consul.native_bootstrap(CONSUL_BOOTSTRAP, Path("/state/admin/orders-1-sidecar.sock"))
    assert merged == {"memory_allocator_manager": native["memory_allocator_manager"]}


def test_a_native_sidecar_runs_envoy_with_the_patched_bootstrap_and_the_sidecar_flags() -> None:
    argv = consul.envoy_argv(Path("/bin/envoy"), Path("/state/config/orders-1-sidecar.json"))
    assert argv[:3] == ["/bin/envoy", "--config-path", "/state/config/orders-1-sidecar.json"]
    assert argv[3:] == consul.SIDECAR_ENVOY_FLAGS
    assert "--drain-time-s" in argv and "--disable-hot-restart" in argv


def test_no_topology_port_is_an_admin_api() -> None:
    assert not [name for name in load().all_ports() if "admin" in name]


def test_sockets_are_in_the_state_dir_when_it_is_short(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    socket = envoy_admin.prepare(state, "notifications-2-sidecar")
    assert socket == tmp_path / "s" / "admin" / "notifications-2-sidecar.sock"
    assert (socket.parent.stat().st_mode & 0o777) == 0o700


def test_a_deep_state_dir_gets_a_short_owner_only_folder_of_its_own(tmp_path: Path) -> None:
    deep = StateDir(tmp_path / ("d" * 120))
    socket = envoy_admin.prepare(deep, "notifications-2-sidecar")
    assert len(os.fsencode(socket)) <= MAX_SOCKET_PATH
    assert not socket.is_relative_to(deep.root)
    info = socket.parent.lstat()
    assert (info.st_uid, info.st_mode & 0o777) == (os.getuid(), 0o700)
    other = StateDir(tmp_path / ("e" * 120))
    assert envoy_admin.admin_dir(other) != socket.parent
    envoy_admin.remove(deep)
    assert not socket.parent.exists()


def test_removing_a_folder_that_is_gone_is_nothing_to_do(tmp_path: Path) -> None:
    envoy_admin.remove(StateDir(tmp_path / ("d" * 120)))


def test_a_folder_others_may_enter_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    (tmp_path / "admin").mkdir(mode=0o755)
    (tmp_path / "admin").chmod(0o755)
    with pytest.raises(AdminDirError):
        envoy_admin.prepare(state, "edge-1")


def test_a_symbolic_link_for_the_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    state = StateDir(tmp_path / "s")
    state.root.mkdir()
    (state.root / "admin").symlink_to(target)
    with pytest.raises(AdminDirError):
        envoy_admin.prepare(state, "edge-1")
