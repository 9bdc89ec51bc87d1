"""The provisioned Grafana dashboards, read the way the dashboard tests need them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mesh.runtime.paths import REPO_ROOT

GRAFANA_DIR = REPO_ROOT / "observability" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    expr: str


def dashboards() -> dict[Path, dict]:
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, those inside collapsed rows included; rows themselves are not panels."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboard: dict) -> Iterator[Target]:
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield Target(dashboard["uid"], panel["title"], target["expr"])
