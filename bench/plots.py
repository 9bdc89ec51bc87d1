"""One latency-against-rate PNG per scenario (docs/benchmarks/<scenario>.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

PERCENTILES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"))


def plot(scenario: str, title: str, runs: list[dict[str, Any]], folder: Path) -> Path | None:
    fixed = sorted((r for r in runs if r["target_rate"]), key=lambda r: r["target_rate"])
    if not fixed:
        return None
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=100)
    rates = [r["target_rate"] for r in fixed]
    for key, label in PERCENTILES:
        axes.plot(rates, [max(r[key], 0.01) for r in fixed], marker="o", label=label)
    for ceiling in (r for r in runs if not r["target_rate"]):
        axes.scatter([ceiling["throughput"]], [max(ceiling["p99_ms"], 0.01)], marker="x", s=80,
                     label=f"ceiling ({ceiling['tool']}), p99")  # fmt: skip
    failed = [r for r in fixed if r["error_ratio"]]
    if failed:
        axes.scatter([r["target_rate"] for r in failed], [r["p99_ms"] for r in failed],
                     facecolors="none", edgecolors="red", s=160, label="with errors")  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = folder / f"{scenario}.png"
    figure.savefig(path)
    plt.close(figure)
    return path
