"""What the figures were measured on, and at which commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import psutil

from mesh.runtime.paths import REPO_ROOT


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def describe() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": psutil.virtual_memory().total / (1 << 30),
        "load_before": load_average(),
    }


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit() -> tuple[str, bool]:
    """HEAD, and whether the work tree differs from it (the mesh runs the work tree)."""
    return git("rev-parse", "--short=12", "HEAD"), bool(git("status", "--porcelain", "-uno"))
