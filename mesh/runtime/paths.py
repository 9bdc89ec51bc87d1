"""Where things live: the component cache (outside the repo) and the state directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
        for path in (self.logs, self.pids, self.config, self.data):
            path.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
