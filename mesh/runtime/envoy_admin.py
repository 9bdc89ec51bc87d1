"""Where each native Envoy's admin API is, and a client of it.

Every Envoy of the native runtime (the edges and the Connect sidecars) serves its admin API on a
Unix domain socket in an owner-only folder, never on a TCP port: the admin API can stop Envoy
(`/quitquitquit`), fail its health check, change its log level and dump its config, and any
local user can connect to a loopback port. A socket is reachable by the mesh's own user only
(docs/security.md, "Envoy admin APIs")."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import httpx

from mesh.runtime.paths import OWNER_ONLY_DIR, OWNER_ONLY_FILE, StateDir

# sun_path is 108 bytes on Linux, its terminating NUL included.
MAX_SOCKET_PATH = 107
# Kept free for "/<process name>.sock" (the longest today: "/notifications-2-sidecar.sock").
SOCKET_NAME_ROOM = 32
# Envoy wants a host in the request; the socket says which Envoy it is.
BASE_URL = "http://envoy"


class AdminDirError(RuntimeError):
    pass


def admin_dir(state: StateDir) -> Path:
    """The folder of the sockets: `<state>/admin`, or, when that path leaves too little room
    for a socket's name (a deep state dir), a folder in the temporary directory named after the
    state dir (`prepare` refuses it unless it is this user's own and owner-only)."""
    preferred = state.root / "admin"
    if len(os.fsencode(preferred)) + SOCKET_NAME_ROOM <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(state.root)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shopmesh-{os.getuid()}-{digest}"


def socket_path(state: StateDir, name: str) -> Path:
    """The admin socket of the Envoy the runtime runs as process `name`."""
    file_name = f"{name}.sock"
    if len(os.fsencode(file_name)) + 1 > SOCKET_NAME_ROOM:
        raise ValueError(f"{name!r} is too long a name for an admin socket")
    return admin_dir(state) / file_name


def prepare(state: StateDir, name: str) -> Path:
    """Before Envoy `name` starts: its socket's folder exists and is owner-only and this
    user's. (Envoy replaces a socket a killed Envoy left at the path itself.)"""
    folder = admin_dir(state)
    folder.mkdir(mode=OWNER_ONLY_DIR, parents=True, exist_ok=True)
    info = folder.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise AdminDirError(f"{folder} is not an owner-only folder of this user: refusing it")
    return socket_path(state, name)


def remove(state: StateDir) -> None:
    """Once every Envoy of `state` has stopped: its sockets' folder goes, so a deep state dir
    leaves nothing behind in the temporary directory. A folder that is not this user's own is
    left alone."""
    folder = admin_dir(state)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
        shutil.rmtree(folder)


def address(socket: Path) -> dict[str, Any]:
    """Envoy's admin address (bootstrap `admin.address`) on `socket`, which Envoy makes
    owner-only."""
    return {"pipe": {"path": str(socket), "mode": OWNER_ONLY_FILE}}


def upstream(socket: Path) -> dict[str, Any]:
    """A cluster endpoint's address reaching the admin API on `socket` from inside Envoy."""
    return {"pipe": {"path": str(socket)}}


def client(socket: Path, timeout: float = 2.0) -> httpx.Client:
    """An HTTP client of the admin API on `socket`."""
    transport = httpx.HTTPTransport(uds=str(socket))
    return httpx.Client(transport=transport, base_url=BASE_URL, timeout=timeout)
