"""Where things live: the component cache (outside the repo) and the state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNER_ONLY_DIR = 0o700
OWNER_ONLY_FILE = 0o600


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
        default = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
        return cls(Path(os.environ.get("SHOPMESH_STATE_DIR", default / "shopmesh")).resolve())

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
