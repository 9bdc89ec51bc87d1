"""`make bench`: every scenario at fixed rates and at its ceiling, Kafka against Kafka's own
tools, order → WebSocket latency and the mesh's resources, in one run against the live mesh
(start it with `mesh up -d`); writes docs/benchmarks.md, docs/benchmarks/<scenario>.png and
docs/benchmarks/results.json anew.

    .venv/bin/python -m bench [--only SCENARIO ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import kafka_perf, kafka_pipeline, machine, plan, plots, report, ws_latency
from mesh.bench import resources, scenarios
from mesh.runtime import sizes
from mesh.runtime.paths import REPO_ROOT, StateDir
from mesh.topology import Topology, load

DOCS = REPO_ROOT / "docs"
FIGURES = DOCS / "benchmarks"
TOOLS = "vegeta 12.13.0, h3load (vegeta over quic-go 0.65.0), ghz 0.93.0, wrk 4.1.0"


def say(message: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_scenario(topology: Topology, state: StateDir, name: str, results: report.Results) -> None:
    for step in plan.steps_of(name):
        say(step.command())
        request = scenarios.Run(name, step.rate, step.duration_s, plan.CEILING_WORKERS,
                                tool=step.tool)  # fmt: skip
        run = scenarios.run(topology, state, request) | {"command": step.command()}
        results["runs"].append(run)
        say(f"  {run['throughput']:,.0f}/s ok, p99 {run['p99_ms']:.1f} ms, "
            f"{100 * run['error_ratio']:.2f} % errors")  # fmt: skip
        if plan.saturated(run):
            results["skipped"][name] = (
                f"saturated at {step.rate:,}/s ({run['throughput']:,.0f}/s answered, "
                f"{100 * run['error_ratio']:.1f} % errors)"
            )
            rest = [s for s in plan.steps_of(name) if s.rate == 0]
            for ceiling in rest:
                say(ceiling.command())
                request = scenarios.Run(name, 0, ceiling.duration_s, plan.CEILING_WORKERS,
                                        tool=ceiling.tool)  # fmt: skip
                results["runs"].append(
                    scenarios.run(topology, state, request) | {"command": ceiling.command()}
                )
            return


def run_long(topology: Topology, state: StateDir, results: report.Results) -> None:
    name, rate, duration = plan.LONG_RUN
    step = plan.Step(name, rate, duration)
    say(step.command())
    run = scenarios.run(topology, state, scenarios.Run(name, rate, duration))
    results["runs"].append(run | {"command": step.command()})


def run_pairs(topology: Topology, state: StateDir, results: report.Results, quiet: float) -> None:
    """plan.PAIRS more runs of each of plan.PAIRED at plan.PAIRED_RATE, back to back."""
    for pair in range(1, plan.PAIRS + 1):
        for name in plan.PAIRED:
            results["settled_s"][f"{name}-pair-{pair}"] = settle(state, quiet)
            step = plan.Step(name, plan.PAIRED_RATE, plan.FIXED_S)
            say(f"{step.command()} (pair {pair} of {plan.PAIRS})")
            run = scenarios.run(topology, state, scenarios.Run(name, step.rate, step.duration_s))
            results["runs"].append(run | {"command": step.command(), "pair": pair})


def run_kafka(results: report.Results, state: StateDir, quiet_percent: float) -> None:
    """The flat-out pipeline, the paced one and Kafka's tools, each once the mesh has settled
    from the one before (the brokers spend seconds after a flat-out burst on it)."""
    say("kafka: bench/kafka_pipeline.py")
    pipeline = asyncio.run(
        kafka_pipeline.run(plan.KAFKA_MESSAGES, plan.KAFKA_SIZE, plan.KAFKA_PARTITIONS)
    )
    results["settled_s"]["kafka-paced"] = settle(state, quiet_percent)
    paced_messages = plan.KAFKA_PACED_RATE * plan.KAFKA_PACED_S
    say(f"kafka: bench/kafka_pipeline.py at {plan.KAFKA_PACED_RATE}/s")
    paced = asyncio.run(
        kafka_pipeline.run(
            paced_messages, plan.KAFKA_SIZE, plan.KAFKA_PARTITIONS, plan.KAFKA_PACED_RATE
        )
    )
    results["settled_s"]["kafka-tools"] = settle(state, quiet_percent)
    say("kafka: producer-perf-test and consumer-perf-test")
    tools = kafka_perf.run(plan.KAFKA_MESSAGES, plan.KAFKA_SIZE, plan.KAFKA_PARTITIONS)
    results["kafka"] = {"pipeline": pipeline, "paced": paced, "tools": tools}


def idle(state: StateDir) -> dict[str, Any]:
    meter = resources.idle_cpu(state, plan.IDLE_S)
    nproc = os.cpu_count() or 1
    by_component = {n: 100 * s / (meter.wall_s * nproc) for n, s in meter.spent.items()}
    return {
        "seconds": plan.IDLE_S,
        "nproc": nproc,
        "percent": sum(by_component.values()),
        "by_component_percent": by_component,
    }


def rest(state: StateDir) -> float | None:
    """Wait until the mesh has run REST_MIN_UPTIME_S and its CPU no longer falls (it does for
    minutes after a start): the seconds it took, None if it still fell at the timeout."""
    young_s = plan.REST_MIN_UPTIME_S - resources.uptime_s(state)
    if young_s > 0:
        say(f"the mesh started {plan.REST_MIN_UPTIME_S - young_s:.0f} s ago: {young_s:.0f} s more")
        time.sleep(young_s)
    waited = resources.wait_until_steady(
        lambda: resources.machine_percent(state, plan.REST_WINDOW_S),
        plan.REST_WINDOWS,
        plan.REST_TOLERANCE_PERCENT,
        plan.REST_TIMEOUT_S,
    )
    say(f"at rest after {waited:.0f} s" if waited is not None else "still settling; going on")
    return None if waited is None else waited + max(young_s, 0)


def settle(state: StateDir, quiet_percent: float) -> float | None:
    """Wait until the mesh is back near rest: the seconds it took, None if it never was."""
    waited = resources.wait_until_quiet(
        lambda: resources.machine_percent(state, plan.SETTLE_WINDOW_S),
        quiet_percent,
        plan.SETTLE_TIMEOUT_S,
    )
    say(f"settled in {waited:.0f} s" if waited is not None else "did not settle; going on")
    return waited


def selected(only: list[str] | None) -> list[str]:
    every = [*plan.GET_SCENARIOS, *plan.GRPC_SCENARIOS, *plan.POST_SCENARIOS]
    return [s for s in every if not only or s in only]


def measure(only: list[str] | None) -> report.Results:
    topology, state = load(), StateDir.default()
    commit, dirty = machine.commit()
    results: report.Results = {
        "started": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "commit": commit,
        "dirty": dirty,
        "machine": machine.describe(),
        "tools": TOOLS,
        "topology": sizes.chosen(state),
        "runs": [],
        "skipped": {},
    }
    started = time.monotonic()
    say("waiting for the mesh to be at rest")
    results["rested_s"] = rest(state)
    say("resources at idle")
    results["resources"] = {"idle": idle(state), "pss_before": resources.pss_bytes(state)}
    results["settled_s"] = {}
    quiet = results["resources"]["idle"]["percent"] + plan.SETTLE_MARGIN_PERCENT
    for name in selected(only):
        results["settled_s"][name] = settle(state, quiet)
        run_scenario(topology, state, name, results)
        if name == plan.LONG_RUN[0]:
            run_long(topology, state, results)
    if all(name in selected(only) for name in plan.PAIRED):
        run_pairs(topology, state, results, quiet)
    if not only:
        results["settled_s"]["ws"] = settle(state, quiet)
        say("order → WebSocket PAID probe")
        results["ws"] = ws_latency.probe(topology, state, plan.WS_ORDERS)
        results["settled_s"]["kafka"] = settle(state, quiet)
        run_kafka(results, state, quiet)
    results["resources"]["pss_after"] = resources.pss_bytes(state)
    load_ended = time.monotonic()
    results["settled_s"]["memory"] = settle(state, quiet)
    time.sleep(max(plan.MEMORY_AT_REST_AFTER_S - (time.monotonic() - load_ended), 0))
    results["resources"]["pss_rested"] = resources.pss_bytes(state)
    results["machine"]["load_after"] = machine.load_average()
    results["wall_s"] = time.monotonic() - started
    return results


def write(results: report.Results) -> None:
    FIGURES.mkdir(exist_ok=True)
    results["plots"] = []
    for name in selected(None):
        runs = [r for r in results["runs"] if r["scenario"] == name and not r.get("pair")]
        title = scenarios.SCENARIOS[name].title
        if plots.plot(name, title, runs, FIGURES) is not None:
            results["plots"].append(name)
    (FIGURES / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (DOCS / "benchmarks.md").write_text(report.document(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=selected(None), metavar="SCENARIO",
                        help="just these scenarios (no Kafka or WebSocket)")  # fmt: skip
    parser.add_argument("--rewrite", action="store_true",
                        help="measure nothing: write docs/benchmarks.md and the plots anew from "
                             "the last run's docs/benchmarks/results.json")  # fmt: skip
    args = parser.parse_args()
    if args.rewrite:
        write(json.loads((FIGURES / "results.json").read_text()))
        say(f"wrote {DOCS / 'benchmarks.md'} from {FIGURES / 'results.json'}")
        return
    results = measure(args.only)
    write(results)
    say(f"wrote {DOCS / 'benchmarks.md'} in {results['wall_s'] / 60:.1f} minutes")


if __name__ == "__main__":
    main()
