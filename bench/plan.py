"""What `make bench` runs: each scenario at fixed rates and at its closed-loop ceiling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIXED_S = 20.0
CEILING_S = 15.0
CEILING_WORKERS = 64
# The "0 errors for 60 s" at 1000 req/s through the edge, TLS HTTP/2.
LONG_RUN = ("edge-h2", 1000, 60.0)

GET_SCENARIOS = ("direct", "sidecars", "edge-h1", "edge-h2", "edge-h3")
GRPC_SCENARIOS = ("grpc-direct", "grpc-sidecars")
POST_SCENARIOS = ("orders-post",)
GET_RATES = (100, 200, 500, 1000, 1500, 2000)
GRPC_RATES = (100, 200, 500, 1000)
POST_RATES = (20, 50, 100, 200)
# The orders a second the issue asks of POST /orders.
POST_TARGET = 200
# What the mesh adds at 200 req/s (edge TLS h2 against orders' own port) is judged on pairs of
# runs, one of each back to back, since a 20 s run's p99 at that rate swings with the mesh's
# background work (+33 ms in one make bench, +397 ms in the next, the path unchanged): the
# sweeps' own pair and PAIRS more, the verdict on their median, their range shown.
PAIRED = ("direct", "edge-h2")
PAIRED_RATE = 200
PAIRS = 3
# wrk's closed loop next to vegeta's where it fits (one token, no source address).
WRK_SCENARIOS = ("direct", "sidecars")

KAFKA_MESSAGES = 20000
# Then the brief's rate held for KAFKA_PACED_S (open model): its latencies are the pipeline's at
# that rate, where the flat-out run's are mostly its own backlog.
KAFKA_PACED_RATE = 5000
KAFKA_PACED_S = 10
KAFKA_SIZE = 512
KAFKA_PARTITIONS = 6
WS_ORDERS = 30
IDLE_S = 15.0
# The idle share is measured once the mesh is at rest: for minutes after `mesh up` the brokers,
# Consul and Prometheus still work off their start (a57ab47's run a minute after `up`: 40.4 % of
# the machine at idle, 25.9 % half an hour later). At rest: the mean of the last REST_WINDOWS
# windows at most REST_TOLERANCE_PERCENT below the mean of the REST_WINDOWS before them.
# The detector alone passed 37 s after a `mesh up` with the idle mesh at 27.9 % (21.0 % four
# minutes later), so it starts once the mesh's youngest process has run this long.
REST_MIN_UPTIME_S = 300.0
REST_WINDOW_S = 5.0
REST_WINDOWS = 3
REST_TOLERANCE_PERCENT = 2.0
REST_TIMEOUT_S = 300.0
# Before each scenario the mesh must be back near rest: what an overload left queued (requests,
# exchanges, consumer lag, the JIT) would otherwise be measured as the next scenario's. Quiet:
# a window with at most this much more of the machine's CPU than at rest.
SETTLE_WINDOW_S = 2.0
SETTLE_MARGIN_PERCENT = 10.0
SETTLE_TIMEOUT_S = 60.0
# Memory is taken right after the last load (the figure the targets judge) and once more when
# the mesh has been quiet this long after it: what the load left for good, once the pools' idle
# connections (15 s at the edge, 30 s to Postgres) are closed.
MEMORY_AT_REST_AFTER_S = 60.0


@dataclass(frozen=True)
class Step:
    scenario: str
    rate: int  # 0: ceiling
    duration_s: float
    tool: str = "vegeta"

    def command(self) -> str:
        words = ["mesh", "bench", self.scenario, "--rate", str(self.rate)]
        words += ["--duration", f"{self.duration_s:g}"]
        if self.rate == 0:
            words += ["--workers", str(CEILING_WORKERS)]
        if self.tool != "vegeta":
            words += ["--tool", self.tool]
        return " ".join(words)


def rates_of(scenario: str) -> tuple[int, ...]:
    if scenario in GRPC_SCENARIOS:
        return GRPC_RATES
    if scenario in POST_SCENARIOS:
        return POST_RATES
    return GET_RATES


def steps_of(scenario: str) -> list[Step]:
    """Fixed rates from low to high, then the ceiling (and wrk's, where it fits)."""
    steps = [Step(scenario, rate, FIXED_S) for rate in rates_of(scenario)]
    steps.append(Step(scenario, 0, CEILING_S))
    if scenario in WRK_SCENARIOS:
        steps.append(Step(scenario, 0, CEILING_S, "wrk"))
    return steps


def saturated(result: dict[str, Any]) -> bool:
    """A fixed-rate run the mesh could not hold: higher rates would only queue and time out."""
    target = result["target_rate"]
    return bool(target) and (result["error_ratio"] > 0.2 or result["throughput"] < 0.7 * target)
