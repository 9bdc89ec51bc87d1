"""What a load run measured, read from vegeta's, ghz's or wrk's own report."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

NS_PER_MS = 1_000_000
GHZ_CANCELLED_AT_END = "Canceled"


@dataclass(frozen=True)
class Figures:
    requests: int
    # Requests sent per second of the attack (the offered load the tool achieved).
    rate: float
    # Successful responses per second, until the last one came back.
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    error_ratio: float
    # HTTP status (or gRPC code) -> count; "0" is a request that got no response at all.
    status_counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_vegeta(report: dict[str, Any]) -> Figures:
    """`vegeta report -type json`: latencies in nanoseconds, `success` the share of 2xx/3xx."""
    latencies = report["latencies"]
    return Figures(
        requests=report["requests"],
        rate=report["rate"],
        throughput=report["throughput"],
        p50_ms=latencies["50th"] / NS_PER_MS,
        p90_ms=latencies["90th"] / NS_PER_MS,
        p99_ms=latencies["99th"] / NS_PER_MS,
        max_ms=latencies["max"] / NS_PER_MS,
        error_ratio=1.0 - report["success"] if report["requests"] else 0.0,
        status_counts={str(code): n for code, n in sorted(report["status_codes"].items())},
        errors=list(report.get("errors") or [])[:10],
    )


def from_ghz(report: dict[str, Any]) -> Figures:
    """`ghz -O json`: durations in nanoseconds, statuses by gRPC code name. Calls still in flight
    when --duration ends are cancelled by ghz itself (Canceled): not counted."""
    percentiles = {p["percentage"]: p["latency"] for p in report.get("latencyDistribution") or []}
    statuses = dict(report.get("statusCodeDistribution") or {})
    count = report["count"] - statuses.pop(GHZ_CANCELLED_AT_END, 0)
    ok = statuses.get("OK", 0)
    seconds = report["total"] / 1e9
    return Figures(
        requests=count,
        rate=count / seconds if seconds else 0.0,
        throughput=ok / seconds if seconds else 0.0,
        p50_ms=percentiles.get(50, 0) / NS_PER_MS,
        p90_ms=percentiles.get(90, 0) / NS_PER_MS,
        p99_ms=percentiles.get(99, 0) / NS_PER_MS,
        max_ms=report.get("slowest", 0) / NS_PER_MS,
        error_ratio=(count - ok) / count if count else 0.0,
        status_counts=dict(sorted(statuses.items())),
        errors=[e for e in report.get("errorDistribution") or {} if "Canceled" not in e][:10],
    )


WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
WRK_LATENCY = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
WRK_MAX = re.compile(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", re.M)
WRK_TOTAL = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def from_wrk(output: str) -> Figures:
    """wrk's text output with `--latency` (it has no machine-readable report)."""
    percentiles = {
        int(p): float(v) * WRK_UNITS_MS[unit] for p, v, unit in WRK_LATENCY.findall(output)
    }
    total = WRK_TOTAL.search(output)
    peak = WRK_MAX.search(output)
    if total is None or peak is None or len(percentiles) < 3:
        raise ValueError(f"not wrk --latency output:\n{output}")
    requests = int(total.group(1))
    seconds = float(total.group(2)) * WRK_UNITS_MS[total.group(3)] / 1000
    failed = sum(int(n) for n in WRK_NON_2XX.findall(output))
    if sockets := WRK_SOCKET_ERRORS.search(output):
        failed += sum(int(n) for n in sockets.groups())
    return Figures(
        requests=requests,
        rate=requests / seconds,
        throughput=(requests - failed) / seconds,
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        max_ms=float(peak.group(1)) * WRK_UNITS_MS[peak.group(2)],
        error_ratio=min(failed / requests, 1.0) if requests else 0.0,
        status_counts={"non-2xx/3xx or socket error": failed} if failed else {},
    )
