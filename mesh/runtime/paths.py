"""Where things live: the component cache (outside the repo) and the state directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNER_ONLY_DIR = 0o700
OWNER_ONLY_FILE = 0o600
# Whatever the native runtime, and every process it starts, creates is its owner's only: Kafka's
# segments, Consul's and Prometheus's data, configs with passwords, logs (docs/security.md).
PRIVATE_UMASK = 0o077


@contextmanager
def private_files() -> Iterator[None]:
    """Files and folders this process creates meanwhile are owner-only (the umask, restored
    after). Around the native runtime's work on a state dir only: not around provisioning
    (apt-get, builds into the cache) nor compose's init, which writes files for the containers'
    other users on purpose."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_private(root: Path) -> list[Path]:
    """Take the group's and others' permissions off every file and folder under `root` (which a
    state dir made by an earlier version holds); symbolic links are left alone. What changed."""
    changed = []
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / name for name in (*dirs, *files))]:
            try:
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
                    continue
                path.chmod(stat.S_IMODE(mode) & ~0o077)
            except FileNotFoundError:  # gone meanwhile (a log segment deleted)
                continue
            changed.append(path)
    return sorted(set(changed))


def write_private(path: Path, content: str | bytes) -> None:
    """Write a secret: the file is created owner-only before anything is written into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
    os.fchmod(fd, OWNER_ONLY_FILE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shopmesh"
    return Path(os.environ.get("SHOPMESH_CACHE_DIR", default)).expanduser().resolve()


@dataclass(frozen=True)
class StateDir:
    """One directory holds a running mesh's data, logs, pids, secrets and generated configs."""

    root: Path

    @classmethod
    def default(cls) -> StateDir:
        # An empty variable counts as unset: Path("") is the working directory, which ensure()
        # would make owner-only.
        default = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return cls(Path(os.environ.get("SHOPMESH_STATE_DIR") or default / "shopmesh").resolve())

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def ensure(self) -> None:
        """Create the directory owner-only: logs, configs and secrets are nobody else's to read
        (Postgres, which runs as its own user, keeps its data outside: mesh/runtime/postgres.py)."""
        for path in (self.root, self.logs, self.pids, self.config, self.data, self.secrets):
            path.mkdir(parents=True, exist_ok=True, mode=OWNER_ONLY_DIR)
            path.chmod(OWNER_ONLY_DIR)
