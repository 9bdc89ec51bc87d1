"""No Envoy's admin API is open to another local user: every Envoy of the mesh (each sidecar,
each edge) serves it on an owner-only Unix socket, so another account can neither stop it
(`POST /quitquitquit`) nor fail its health check, on the socket or on any TCP port the Envoy
listens on; the mesh's own tools still read it (docs/security.md#envoy-admin-apis)."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import psutil

from mesh.runtime import envoy_admin
from mesh.runtime.supervisor import Mesh

OTHER_USER = "nobody"
# Run by the other user with the system's Python (it may not enter the project's venv): one
# POST /quitquitquit to each target, and what came of it.
ATTACK = r"""
import json, socket, sys
results = {}
for target in json.loads(sys.argv[1]):
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        address = target
    else:
        host, port = target.rsplit(":", 1)
        s = socket.socket(socket.AF_INET)
        address = (host, int(port))
    s.settimeout(3)
    try:
        s.connect(address)
        s.sendall(b"POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        results[target] = "answered: " + s.recv(64).split(b"\r\n")[0].decode(errors="replace")
    except OSError as exc:
        results[target] = "refused: " + type(exc).__name__
    finally:
        s.close()
print(json.dumps(results))
"""

READ = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


def envoys(mesh: Mesh) -> list[str]:
    """The process names of every Envoy the mesh runs: each sidecar and each edge."""
    topology = mesh.topology
    sidecars = [f"{i.id}-sidecar" for i in topology.instances()]
    edges = [e.id for e in topology.edge.instances]
    return sidecars + edges + [f"{edge}-sidecar" for edge in edges]


def tcp_listeners(pid: int) -> list[str]:
    return sorted(
        {
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
    )


def as_other_user(targets: list[str]) -> dict[str, str]:
    attack = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", "/usr/bin/python3", "-c", ATTACK, json.dumps(targets)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert attack.returncode == 0, attack.stderr
    results: dict[str, str] = json.loads(attack.stdout)
    return results


def live(mesh: Mesh, name: str) -> str:
    with envoy_admin.client(envoy_admin.socket_path(mesh.state, name)) as admin:
        return admin.get("/ready").text.strip()


def test_another_user_cannot_stop_any_envoy_on_its_socket_or_on_any_of_its_ports(
    mesh: Mesh,
) -> None:
    names = envoys(mesh)
    running = mesh.running()
    pids = {name: running[name].pid for name in names}
    sockets = {name: envoy_admin.socket_path(mesh.state, name) for name in names}
    for name, path in sockets.items():
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode), name
        assert stat.S_IMODE(info.st_mode) == 0o600, (name, oct(info.st_mode))
        assert info.st_uid == os.getuid(), name
        folder = path.parent.lstat()
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    ports = {name: tcp_listeners(pid) for name, pid in pids.items()}
    assert all(ports.values()), ports

    results = as_other_user(
        [str(p) for p in sockets.values()] + [t for targets in ports.values() for t in targets]
    )

    for name, path in sockets.items():
        assert results[str(path)] == "refused: PermissionError", (name, results[str(path)])
    answered_ok = {t: r for t, r in results.items() if r.startswith("answered: HTTP/1.1 200")}
    assert answered_ok == {}, "a TCP listener of an Envoy took POST /quitquitquit"
    after = mesh.running()
    assert {name: after[name].pid for name in names} == pids, "an Envoy stopped or restarted"
    assert {name: live(mesh, name) for name in names} == dict.fromkeys(names, "LIVE")


def test_the_mesh_itself_reads_every_envoys_stats_on_its_socket(mesh: Mesh) -> None:
    for name in envoys(mesh):
        with envoy_admin.client(envoy_admin.socket_path(mesh.state, name)) as admin:
            stats = admin.get("/stats", params={"filter": "^server.live$"})
        assert stats.status_code == 200, name
        assert stats.text.strip() == "server.live: 1", (name, stats.text)


def test_the_edges_ready_and_metrics_listener_answers_reads_and_nothing_else(mesh: Mesh) -> None:
    host = mesh.topology.bind_host
    targets = [f"{host}:{e.metrics_port}" for e in mesh.topology.edge.instances]
    refused = as_other_user(targets)
    assert set(refused.values()) == {"answered: HTTP/1.1 404 Not Found"}, refused
    for edge in mesh.topology.edge.instances:
        base = f"http://{host}:{edge.metrics_port}"
        ready = subprocess.run(
            ["runuser", "-u", OTHER_USER, "--", "/usr/bin/python3", "-c", READ, f"{base}/ready"],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=30,
        )
        assert ready.returncode == 0 and ready.stdout.strip() == "LIVE", ready.stderr
