"""docs/benchmarks.md from one `make bench` run's results (written whole, every run)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench import plan
from mesh.runtime import sizes

TITLES = {
    "direct": "direct",
    "sidecars": "sidecar pair",
    "edge-h1": "edge h1",
    "edge-h2": "edge TLS h2",
    "edge-h3": "edge h3",
    "grpc-direct": "direct",
    "grpc-sidecars": "sidecar pair",
    "orders-post": "POST /orders",
}
GB = 1 << 30
MB = 1 << 20

# results.json of one `make bench` run, and one `mesh bench` run in its "runs" (JSON documents).
Results = dict[str, Any]
RunResult = dict[str, Any]
# A target's figure as measured and whether it is met; None when it was not measured.
Measure = Callable[[Results], tuple[str, bool] | None]


def find(
    runs: Iterable[RunResult], scenario: str, rate: int, tool: str = "", duration_s: float = 0
) -> RunResult | None:
    """The sweep's run of `scenario` at `rate` (0: its ceiling), or None if it was not run."""
    for run in runs:
        if run["scenario"] != scenario or run["target_rate"] != rate or run.get("pair"):
            continue
        if tool and run["tool"] != tool:
            continue
        if duration_s and run["duration_s"] != duration_s:
            continue
        if not duration_s and run["duration_s"] == plan.LONG_RUN[2] and rate:
            continue
        return run
    return None


def pct(ratio: float) -> str:
    return f"{100 * ratio:.2f} %" if ratio else "0"


def cell(run: RunResult | None) -> str:
    """A fixed-rate run in a side-by-side table: p50 / p99, and what went wrong if anything."""
    if run is None:
        return "—"
    text = f"{run['p50_ms']:.1f} / {run['p99_ms']:.1f} ms"
    if run["throughput"] < 0.95 * run["target_rate"]:
        text += f", **{run['throughput']:,.0f}/s**"
    if run["error_ratio"]:
        text += f", **{pct(run['error_ratio'])} err**"
    return text


def ceiling_cell(run: RunResult | None) -> str:
    if run is None:
        return "—"
    text = f"**{run['throughput']:,.0f}/s**, p99 {run['p99_ms']:.0f} ms"
    if run["error_ratio"]:
        text += f", {pct(run['error_ratio'])} err"
    return text


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _resting(results: Results) -> list[str]:
    """How long the run waited for the mesh to be at rest before its idle share was measured."""
    if "rested_s" not in results:
        return []
    waited = results["rested_s"]
    took = f"it took {waited:.0f} s" if waited is not None else "it still fell after the timeout"
    return [
        f"- First the run waits until the mesh is at rest, as it is not for minutes after "
        f"`mesh up`: until its youngest process has run {plan.REST_MIN_UPTIME_S:g} s and the "
        f"mean of its CPU over the last {plan.REST_WINDOWS} windows of "
        f"{plan.REST_WINDOW_S:g} s is at most {plan.REST_TOLERANCE_PERCENT:g} points of the "
        f"machine below the {plan.REST_WINDOWS} before them (at most {plan.REST_TIMEOUT_S:g} "
        f"s; {took}); then it measures the idle share."
    ]


def _settling(results: Results) -> list[str]:
    """How long the run waited for the mesh to come back near rest before each part."""
    waits = results.get("settled_s")
    if not waits:
        return []
    spent = ", ".join(
        f"{name} {seconds:.0f} s" if seconds is not None else f"{name} never (went on)"
        for name, seconds in waits.items()
    )
    return [
        f"- Before each scenario, the WebSocket probe and the Kafka runs, the run waits until "
        f"the mesh's CPU over {plan.SETTLE_WINDOW_S:g} s is at most "
        f"{plan.SETTLE_MARGIN_PERCENT:g} points of the machine over its idle share (at most "
        f"{plan.SETTLE_TIMEOUT_S:g} s), so that what one scenario left queued is not measured "
        f"as the next one's. It waited: {spent}."
    ]


def side_by_side(results: Results, scenarios: tuple[str, ...], rates: tuple[int, ...]) -> list[str]:
    runs = results["runs"]
    rows = [[f"{rate:,}"] + [cell(find(runs, s, rate)) for s in scenarios] for rate in rates]
    rows.append(
        [f"ceiling ({plan.CEILING_WORKERS} in flight)"]
        + [ceiling_cell(find(runs, s, 0, tool=_tool(s))) for s in scenarios]
    )
    wrk = [find(runs, s, 0, tool="wrk") for s in scenarios]
    if any(wrk):
        rows.append(["ceiling, wrk"] + [ceiling_cell(run) for run in wrk])
    header = ["req/s offered", *(TITLES[s] for s in scenarios)]
    lines = table(header, rows)
    for scenario, why in sorted(results.get("skipped", {}).items()):
        if scenario in scenarios:
            lines += ["", f"{TITLES[scenario]}: higher rates not run, {why}."]
    return lines


def _tool(scenario: str) -> str:
    return {"edge-h3": "h3load"}.get(scenario, "ghz" if scenario.startswith("grpc") else "vegeta")


@dataclass(frozen=True)
class Target:
    source: str
    figure: str
    target: str
    measure: Measure
    # The scenario whose runs measure it: a target whose rate was never offered because that
    # scenario saturated below it is not met, not "not measured".
    scenario: str = ""


def _run_figure(
    scenario: str, rate: int, p99_ms: float, errors: float, duration_s: float = 0
) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        run = find(results["runs"], scenario, rate, duration_s=duration_s)
        if run is None:
            return None
        met = (
            run["throughput"] >= 0.99 * rate
            and run["p99_ms"] <= p99_ms
            and run["error_ratio"] <= errors
        )
        text = (
            f"{run['throughput']:,.0f}/s, p99 {run['p99_ms']:.1f} ms, "
            f"{pct(run['error_ratio'])} errors ({run['duration_s']:g} s)"
        )
        return text, met

    return measure


def mesh_adds(results: Results) -> list[tuple[float, float]]:
    """(p50, p99) of edge TLS h2 less direct at plan.PAIRED_RATE: the sweeps' pair, then each
    of the extra pairs that has both runs."""
    direct, edge = plan.PAIRED
    pairs = [(find(results["runs"], direct, plan.PAIRED_RATE),
              find(results["runs"], edge, plan.PAIRED_RATE))]  # fmt: skip
    for number in range(1, plan.PAIRS + 1):
        of_pair = {r["scenario"]: r for r in results["runs"] if r.get("pair") == number}
        pairs.append((of_pair.get(direct), of_pair.get(edge)))
    return [
        (e["p50_ms"] - d["p50_ms"], e["p99_ms"] - d["p99_ms"])
        for d, e in pairs
        if d is not None and e is not None
    ]


def _signed(ms: float) -> str:
    return f"{ms:+.1f}"


def _mesh_adds(p50_ms: float, p99_ms: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        adds = mesh_adds(results)
        if not adds:
            return None
        d50 = statistics.median(a for a, _ in adds)
        d99 = statistics.median(b for _, b in adds)
        text = f"{_signed(d50)} ms p50, {_signed(d99)} ms p99"
        if len(adds) > 1:
            low50, high50 = min(a for a, _ in adds), max(a for a, _ in adds)
            low99, high99 = min(b for _, b in adds), max(b for _, b in adds)
            text += (
                f" (median of {len(adds)} pairs of runs; p50 {_signed(low50)} to "
                f"{_signed(high50)}, p99 {_signed(low99)} to {_signed(high99)})"
            )
        return text, d50 <= p50_ms and d99 <= p99_ms

    return measure


def _cpu_per_get(limit_ms: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        run = find(results["runs"], "edge-h2", 200)
        if run is None:
            return None
        total = run["cpu_ms_per_request_total"]
        return f"{total:.2f} ms (edge TLS h2 at 200/s)", total <= limit_ms

    return measure


def _orders(rate: int, p99_ms: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        run = find(results["runs"], "orders-post", rate)
        if run is None:
            return None
        check = run.get("orders", {})
        once = check.get("charged_once", 0) == check.get("accepted", -1) == check.get("orders")
        met = (
            run["throughput"] >= 0.99 * rate
            and run["p99_ms"] <= p99_ms
            and not run["error_ratio"]
            and once
        )
        text = (
            f"{run['throughput']:,.0f}/s, p99 {run['p99_ms']:.0f} ms, "
            f"{pct(run['error_ratio'])} errors; {check.get('accepted', 0):,} accepted, "
            f"{check.get('orders', 0):,} orders found, {check.get('charged_once', 0):,} PAID "
            "and charged once"
        )
        return text, met

    return measure


def _orders_ceiling(rate: int) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        run = find(results["runs"], "orders-post", 0)
        if run is None:
            return None
        return f"ceiling {run['throughput']:,.0f}/s", run["throughput"] >= rate

    return measure


def _service_latency(p99_ms: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        run = find(results["runs"], "orders-post", 100)
        if run is None:
            return None
        text = f"POST /orders p99 {run['p99_ms']:.0f} ms at 100/s through the edge"
        return text, run["p99_ms"] <= p99_ms and run["error_ratio"] <= 0.01

    return measure


# A paced run kept to its rate if its producer sent this share of it (the last send within 1 %
# of the schedule).
KEPT_TO_RATE = 0.99


def _kafka(rate: float, p99_ms: float, loss: float) -> Measure:
    """Met by a run at `rate` (open model) that kept to it with that p99 and loss; a target
    without a paced run of its rate is judged by the flat-out run, which must reach it."""

    def measure(results: Results) -> tuple[str, bool] | None:
        kafka = results.get("kafka", {})
        pipe, paced = kafka.get("pipeline"), kafka.get("paced")
        if paced is not None and paced["offered_rate"] == rate:
            lost = paced["lost"] / paced["messages"]
            text = (
                f"at {rate:,.0f} msg/s offered: {paced['send_rate']:,.0f} sent a second, "
                f"p99 {paced['p99_ms']:.0f} ms, {paced['lost']} lost"
            )
            kept = paced["send_rate"] >= KEPT_TO_RATE * rate
            return text, kept and paced["p99_ms"] <= p99_ms and lost <= loss
        if pipe is None:
            return None
        lost = pipe["lost"] / pipe["messages"]
        text = (
            f"flat out: {pipe['end_to_end_rate']:,.0f} msg/s, p99 {pipe['p99_ms']:.0f} ms, "
            f"{pipe['lost']} lost"
        )
        return text, pipe["end_to_end_rate"] >= rate and pipe["p99_ms"] <= p99_ms and lost <= loss

    return measure


def _kafka_vs_tool(share: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        kafka = results.get("kafka", {})
        if "pipeline" not in kafka or "tools" not in kafka:
            return None
        ratio = kafka["pipeline"]["produce_rate"] / kafka["tools"]["producer"]["rate"]
        return f"{ratio:.2f}x Kafka's producer-perf-test", ratio >= share

    return measure


def _ws(p99_ms: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        ws = results.get("ws")
        if ws is None:
            return None
        p99 = ws["placed_to_paid"]["p99_ms"]
        text = f"p99 {p99:.0f} ms ({ws['orders'] - ws['missing']} of {ws['orders']} arrived)"
        return text, p99 <= p99_ms and not ws["missing"]

    return measure


def _memory(limit_gb: float) -> Measure:
    def measure(results: Results) -> tuple[str, bool] | None:
        pss = results.get("resources", {}).get("pss_after")
        if not pss:
            return None
        total = sum(pss.values())
        text = f"{total / GB:.2f} GB PSS right after the load"
        if rested := results["resources"].get("pss_rested"):
            text += f" ({sum(rested.values()) / GB:.2f} GB a minute later)"
        return text, total <= limit_gb * GB

    return measure


TARGETS = (
    Target("brief", "gateway throughput", "≥ 1000 req/s, p99 ≤ 200 ms, ≤ 1 % errors",
           _run_figure("edge-h2", 1000, 200, 0.01), "edge-h2"),
    Target("brief", "Order Service answer", "≤ 300 ms", _service_latency(300), "orders-post"),
    Target("brief", "Kafka", "≥ 5000 msg/s, ≤ 500 ms, loss ≤ 0.01 %", _kafka(5000, 500, 1e-4)),
    Target("issue must", "GET /orders/{id} through the edge, TLS h2",
           "≥ 1000 req/s, p99 ≤ 100 ms, 0 errors for 60 s",
           _run_figure(*plan.LONG_RUN[:2], 100, 0.0, duration_s=plan.LONG_RUN[2]), "edge-h2"),
    Target("issue aim", "GET /orders/{id} through the edge, TLS h2", "≥ 2000 req/s, p99 ≤ 50 ms",
           _run_figure("edge-h2", 2000, 50, 0.0), "edge-h2"),
    Target("issue must", "latency the mesh adds at 200 req/s (edge h2 vs direct)",
           "≤ +5 ms p50, ≤ +20 ms p99", _mesh_adds(5, 20)),
    Target("issue aim", "latency the mesh adds at 200 req/s", "≤ +2 ms p50, ≤ +8 ms p99",
           _mesh_adds(2, 8)),
    Target("issue must", "CPU per GET, whole path", "≤ 2 ms", _cpu_per_get(2.0)),
    Target("issue aim", "CPU per GET, whole path", "≤ 1 ms", _cpu_per_get(1.0)),
    Target("issue must", "POST /orders through the edge",
           "≥ 200 orders/s, p99 ≤ 300 ms, 0 errors, every order PAID once",
           _orders(plan.POST_TARGET, 300),
           "orders-post"),
    Target("issue aim", "POST /orders through the edge", "≥ 500 orders/s", _orders_ceiling(500)),
    Target("issue must", "Kafka pipeline, acks=all, RF 3, min ISR 2",
           "≥ 5000 msg/s, e2e p99 ≤ 500 ms, 0 lost", _kafka(5000, 500, 0.0)),
    Target("issue aim", "Kafka pipeline", "≥ 20 000 msg/s, p99 ≤ 100 ms", _kafka(20000, 100, 0.0)),
    Target("issue aim", "Kafka pipeline vs Kafka's own producer", "≥ 0.8x", _kafka_vs_tool(0.8)),
    Target("issue must", "order → WebSocket PAID", "p99 ≤ 300 ms", _ws(300)),
    Target("issue aim", "order → WebSocket PAID", "p99 ≤ 150 ms", _ws(150)),
    Target("issue must", "whole mesh memory", "≤ 3 GB PSS", _memory(3)),
    Target("issue aim", "whole mesh memory", "≤ 2 GB PSS", _memory(2)),
)  # fmt: skip


def targets_table(results: Results) -> list[str]:
    rows = []
    for target in TARGETS:
        measured = target.measure(results)
        saturated = results.get("skipped", {}).get(target.scenario)
        if measured is None and saturated:
            reached = f"not reached: {TITLES[target.scenario]} {saturated}"
            rows.append([target.source, target.figure, target.target, reached, "**not met**"])
            continue
        if measured is None:
            rows.append([target.source, target.figure, target.target, "not measured", "—"])
            continue
        text, met = measured
        rows.append([target.source, target.figure, target.target, text,
                     "**met**" if met else "**not met**"])  # fmt: skip
    return table(["from", "figure", "target", "measured", "verdict"], rows)


def _resources(results: Results) -> list[str]:
    res = results.get("resources", {})
    lines = []
    if pss := res.get("pss_after"):
        columns = [res.get("pss_before", {}), pss, res.get("pss_rested", {})]
        columns = [column for column in columns if column]
        rows = [
            [name, *(f"{column.get(name, 0) / MB:,.0f} MB" for column in columns)]
            for name in sorted(pss, key=lambda name: -pss[name])
        ]
        rows.append(["**all**", *(f"**{sum(column.values()) / GB:.2f} GB**" for column in columns)])
        headers = ["before the load", "after the load", "a minute later"]
        if "pss_before" not in res:
            headers = headers[1:]
        lines += [f"Memory (PSS) of each mesh process and its children, {len(pss)} components:"]
        lines += ["", *table(["component", *headers[: len(columns)]], rows), ""]
    if idle := res.get("idle"):
        top = sorted(idle["by_component_percent"].items(), key=lambda item: -item[1])[:8]
        listed = ", ".join(f"{name} {share:.1f} %" for name, share in top)
        lines += [
            f"Idle CPU of the whole mesh over {idle['seconds']:g} s: **{idle['percent']:.1f} % "
            f"of the machine** ({idle['nproc']} cores); the largest: {listed}.",
            "",
        ]
    lines += _cpu_tables(results)
    return lines


def _cpu_tables(results: Results) -> list[str]:
    """CPU ms per request of each component, every scenario side by side at one rate."""
    rate = 200
    found = {s: find(results["runs"], s, rate) for s in TITLES}
    picked = {s: run for s, run in found.items() if run and run.get("cpu_ms_per_request")}
    if not picked:
        return []
    components: dict[str, float] = {}
    for run in picked.values():
        for name, ms in run["cpu_ms_per_request"].items():
            components[name] = max(components.get(name, 0.0), ms)
    shown = [name for name, ms in sorted(components.items(), key=lambda i: -i[1]) if ms >= 0.01]
    rows = [
        [name] + [f"{picked[s]['cpu_ms_per_request'].get(name, 0):.2f}" for s in picked]
        for name in shown
    ]
    rows.append(
        ["**all**"] + [f"**{run['cpu_ms_per_request_total']:.2f}**" for run in picked.values()]
    )
    header = ["component", *(f"{TITLES[s]}" + (" (gRPC)" if s.startswith("grpc") else "")
                             for s in picked)]  # fmt: skip
    return [
        f"CPU time per request (ms) of each mesh process at {rate} req/s (psutil cpu_times of "
        "every process and its children before and after the run, divided by its requests; "
        "components under 0.01 ms everywhere left out):",
        "",
        *table(header, rows),
        "",
    ]


def _first_requests(results: Results) -> list[str]:
    """The warm-ups: each user's first request on a listener, which waits for auth's token
    exchange (mesh/bench/scenarios.py)."""
    rows = []
    for scenario in plan.GET_SCENARIOS + plan.POST_SCENARIOS:
        ups = [run["warm_up"] for run in results["runs"]
               if run["scenario"] == scenario and run.get("warm_up")]  # fmt: skip
        if not ups:
            continue
        requests = sum(up["requests"] for up in ups)
        failed = sum(up["requests"] * up["error_ratio"] for up in ups)
        rows.append([TITLES[scenario], f"{requests:,}", f"{max(up['p50_ms'] for up in ups):.1f}",
                     f"{max(up['p99_ms'] for up in ups):.1f}", f"{failed:,.0f}"])  # fmt: skip
    if not rows:
        return []
    header = ["listener", "first requests", "p50 (worst run)", "p99 (worst run)", "failed"]
    return [
        "Before each run through the edge, each of its users sent one request on the run's "
        "listener at 100/s (not in the figures above): a user's first request there waits for "
        "auth's token exchange.",
        "",
        *table(header, rows),
        "",
    ]


def _steadiest(results: Results, scenario: str) -> RunResult | None:
    """The scenario's highest fixed rate answered in full without errors: its CPU per request
    carries the least of the mesh's idle work."""
    clean = [
        run for run in results["runs"]
        if run["scenario"] == scenario and run["target_rate"] and not run["error_ratio"]
        and run["throughput"] >= 0.95 * run["target_rate"] and run.get("cpu_ms_per_request")
        and run["duration_s"] != plan.LONG_RUN[2]
    ]  # fmt: skip
    return max(clean, key=lambda run: run["target_rate"], default=None)


def capacity(run: RunResult, idle: dict[str, Any]) -> dict[str, float]:
    """What the machine could answer at 100 % CPU with `run`'s cost per request: the mesh's idle
    work is taken out of both the run's CPU per request and the machine's CPU, and the load
    tool's own CPU (it shares the machine) is added to the request's."""
    cores_ms = idle["nproc"] * 1000.0
    idle_ms_per_s = idle["percent"] / 100 * cores_ms
    mesh_ms = run["cpu_ms_per_request_total"] - idle_ms_per_s / run["target_rate"]
    tool_ms = run.get("load_tool_cpu_ms_per_request", 0.0)
    return {
        "mesh_ms": mesh_ms,
        "tool_ms": tool_ms,
        "idle_ms_per_s": idle_ms_per_s,
        "requests_per_s": (cores_ms - idle_ms_per_s) / (mesh_ms + tool_ms),
    }


def _cpu_of(results: Results, scenario: str, request: str, unit: str, target: int) -> list[str]:
    """One scenario's CPU per request at its steadiest rate, and what the machine could answer
    with it at 100 % CPU against what the issue asks."""
    idle = results.get("resources", {}).get("idle")
    run = _steadiest(results, scenario)
    if idle is None or run is None:
        return [f"{request}: not measured (no rate answered in full)."]
    cap = capacity(run, idle)
    shares = sorted(run["cpu_ms_per_request"].items(), key=lambda item: -item[1])
    listed = ", ".join(f"{name} {ms:.2f}" for name, ms in shares if ms >= 0.05)
    return [
        f"{request} at {run['target_rate']:,} {unit}, its highest rate answered in full: "
        f"**{run['cpu_ms_per_request_total']:.2f} ms** of CPU per request in the mesh's "
        f"processes ({listed}), of which {cap['idle_ms_per_s'] / run['target_rate']:.2f} ms is "
        f"the mesh's idle work spread over the requests (Kafka, Prometheus, Jaeger, Consul: "
        f"{idle['percent']:.1f} % of the machine at rest), and **{cap['tool_ms']:.2f} ms** in "
        "the load tool on the same cores.",
        "",
        f"So each request costs {cap['mesh_ms'] + cap['tool_ms']:.2f} ms of the machine's "
        f"{results['machine']['nproc'] * 1000:,} ms per second, of which "
        f"{results['machine']['nproc'] * 1000 - cap['idle_ms_per_s']:,.0f} are free: at 100 % "
        f"CPU this machine could answer at most **{cap['requests_per_s']:,.0f} {unit}**, "
        f"{cap['requests_per_s'] / target:.2f}x the {target:,} {unit} the issue asks "
        "(latency climbs well before 100 %).",
        *_busier(results, scenario, run, cap, unit, target),
    ]


def _busier(
    results: Results,
    scenario: str,
    steadiest: RunResult,
    cap: dict[str, float],
    unit: str,
    target: int,
) -> list[str]:
    """Where a busier run answered more than `cap` allows, the cost per request fell with the
    load: the same estimate from that run's cost per answered request."""
    busiest = max(
        (run for run in results["runs"] if run["scenario"] == scenario and run["target_rate"]
         and run.get("cpu_ms_per_request") and run["duration_s"] != plan.LONG_RUN[2]),
        key=lambda run: run["throughput"],
    )  # fmt: skip
    if busiest is steadiest or busiest["throughput"] <= cap["requests_per_s"]:
        return []
    answered_share = busiest["throughput"] / busiest["rate"]
    idle_ms = cap["idle_ms_per_s"] / busiest["rate"]
    tool_ms = busiest.get("load_tool_cpu_ms_per_request", 0.0)
    cost_ms = (busiest["cpu_ms_per_request_total"] - idle_ms + tool_ms) / answered_share
    most = (results["machine"]["nproc"] * 1000 - cap["idle_ms_per_s"]) / cost_ms
    return [
        "",
        f"A busier run answered more than that: at {busiest['target_rate']:,} {unit} offered, "
        f"{busiest['throughput']:,.0f} {unit} answered for {cost_ms:.2f} ms of the machine's "
        "CPU each (the refused ones' cost included), so the cost per request falls as the load "
        f"grows. At that cost: at most **{most:,.0f} {unit}**, {most / target:.2f}x the issue's "
        f"{target:,}.",
    ]


def _where_the_cpu_goes(results: Results) -> list[str]:
    return [
        *_cpu_of(results, "edge-h2", "GET /orders/{id} through the edge (TLS h2)", "req/s",
                 plan.LONG_RUN[1]),
        "",
        *_cpu_of(results, "orders-post", "POST /orders through the edge (TLS h2)", "orders/s",
                 plan.POST_TARGET),
        "",
        "[performance.md](performance.md) has the profile of each hop and what was tried.",
    ]  # fmt: skip


def _every_run(results: Results) -> list[str]:
    rows = []
    for run in results["runs"]:
        statuses = " ".join(f"{code}:{n}" for code, n in run["status_counts"].items())
        pair = f" (pair {run['pair']})" if run.get("pair") else ""
        rows.append([
            f"`{run['command']}`{pair}", run["tool"], f"{run['requests']:,}", f"{run['rate']:,.0f}",
            f"{run['throughput']:,.0f}", f"{run['p50_ms']:.1f}", f"{run['p90_ms']:.1f}",
            f"{run['p99_ms']:.1f}", f"{run['max_ms']:.0f}", pct(run["error_ratio"]), statuses,
            " ".join(a.removeprefix("127.0.0.") for a in run.get("client_addresses_counted", [])),
            *_machine_shares(run),
        ])  # fmt: skip
    header = ["command", "tool", "requests", "sent/s", "ok/s", "p50", "p90", "p99", "max",
              "errors", "statuses", "127.0.0.x counted", "machine busy", "outside the mesh",
              "steal"]  # fmt: skip
    return table(header, rows)


def _machine_shares(run: RunResult) -> list[str]:
    machine = run.get("machine")
    if machine is None:
        return ["—"] * 3
    shares = ("busy_percent", "outside_percent", "steal_percent")
    return [f"{machine[share]:.0f} %" for share in shares]


def _post_checks(results: Results) -> list[str]:
    rows = []
    for run in results["runs"]:
        if run["scenario"] != "orders-post" or "orders" not in run:
            continue
        check = run["orders"]
        rate = f"{run['target_rate']:,}/s" if run["target_rate"] else "ceiling"
        not_paid = ", ".join(f"{s} {n}" for s, n in check["not_paid"].items()) or "none"
        rows.append([rate, f"{check['accepted']:,}", f"{check['orders']:,}",
                     f"{check['paid']:,}", f"{check['charged_once']:,}",
                     str(check["charged_twice_or_more"]), not_paid])  # fmt: skip
    header = ["run", "accepted (201)", "orders of the run's keys", "PAID",
              "PAID and charged once", "charged twice", "not PAID"]  # fmt: skip
    return table(header, rows)


def _kafka_section(results: Results) -> list[str]:
    kafka = results.get("kafka", {})
    pipe, tools = kafka.get("pipeline"), kafka.get("tools")
    if pipe is None:
        return ["Not measured."]
    lines = [
        f"{pipe['messages']:,} messages of {pipe['size']} B on a scratch topic of "
        f"{pipe['partitions']} partitions, replication factor 3, min.insync.replicas 2; both "
        "producers with the services' settings (services/common/messaging/producer.py): "
        f"{', '.join(pipe['producer_settings'])}.",
        "",
    ]
    rows = [["bench/kafka_pipeline.py (aiokafka, the services' client), flat out",
             f"{pipe['produce_rate']:,.0f} msg/s", f"{pipe['end_to_end_rate']:,.0f} msg/s",
             f"{pipe['p50_ms']:.1f} / {pipe['p99_ms']:.1f} ms (end to end)",
             str(pipe["lost"])]]  # fmt: skip
    paced = kafka.get("paced")
    if paced is not None:
        rows.append(
            [
                f"the same at {paced['offered_rate']:,.0f} msg/s offered "
                f"({paced['messages']:,} messages)",
                f"{paced['send_rate']:,.0f} msg/s sent, {paced['produce_rate']:,.0f} acked",
                f"{paced['end_to_end_rate']:,.0f} msg/s",
                f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} ms (end to end, from when "
                "each was due)",
                str(paced["lost"]),
            ]
        )
    if tools:
        producer, consumer = tools["producer"], tools["consumer"]
        rows.append(
            [
                "Kafka's producer-perf-test, then consumer-perf-test",
                f"{producer['rate']:,.0f} msg/s",
                f"{consumer['rate']:,.0f} msg/s (consumer alone)",
                f"{producer['p50_ms']:.0f} / {producer['p99_ms']:.0f} ms (acknowledgement)",
                "—",
            ]
        )
    lines += table(["client", "produced (acked)", "consumed", "p50 / p99", "lost"], rows)
    if tools:
        lines += ["", "Kafka's tools ran as:", "", "```"]
        lines += [f"mesh kafka {' '.join(args)}" for args in tools["commands"].values()]
        lines += ["```"]
    return lines


def _ws_section(results: Results) -> list[str]:
    ws = results.get("ws")
    if ws is None:
        return ["Not measured."]
    placed, created = ws["placed_to_paid"], ws["created_to_paid"]
    rows = [
        ["POST sent → PAID on the WebSocket", f"{placed['p50_ms']:.0f} ms",
         f"{placed['p99_ms']:.0f} ms", f"{placed['max_ms']:.0f} ms"],
        ["201 received → PAID on the WebSocket", f"{created['p50_ms']:.0f} ms",
         f"{created['p99_ms']:.0f} ms", f"{created['max_ms']:.0f} ms"],
    ]  # fmt: skip
    return [
        f"{ws['orders']} orders, one at a time, by one bench user through the edge's plain "
        "listener, while the same user's WebSocket (`/notifications/ws`, through the edge) is "
        f"open; {ws['missing']} notifications did not arrive within 15 s.",
        "",
        *table(["interval", "p50", "p99", "max"], rows),
    ]


def _plots(results: Results) -> list[str]:
    return [f"![{s}](benchmarks/{s}.png)" for s in results.get("plots", [])]


def _topology(results: Results) -> str:
    if results.get("topology") == sizes.SMALL:
        return "`mesh up --small`: one of each instance, edge, Consul server and Postgres node"
    return (
        "`mesh up`: the full topology, two of every service instance and edge behind the "
        "balancer, three Consul servers, two Postgres nodes"
    )


def document(results: Results) -> str:
    machine = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`, [bench/](../bench/)) anew on every run: "
        "the figures below are one run's, on the machine it names. "
        "The raw results are in [benchmarks/results.json](benchmarks/results.json).",
        "",
        f"- **date**: {results['started']} (UTC), {results['wall_s'] / 60:.1f} minutes in all",
        f"- **commit**: `{results['commit']}`" + (" (with uncommitted changes)" * results["dirty"]),
        f"- **machine**: {machine['nproc']} cores ({machine['cpu']}), "
        f"{machine['memory_gb']:.0f} GB; "
        f"load average {machine['load_before']} before, {machine['load_after']} after",
        f"- **tools**: {results['tools']}",
        f"- **what runs**: the whole native mesh ({_topology(results)}), every limit on (100 "
        "requests a minute per user, 1000 a second per client address), JWT, token exchange, "
        "mTLS and tracing as configured; the load tools on the same 2 cores.",
        "",
        "## The brief's targets: met / not met",
        "",
        *targets_table(results),
        "",
        "## How",
        "",
        "- Open model: vegeta (`attack -rate R`) sends at a constant rate whatever the answers "
        "take, so latency includes queueing; closed loop (`-rate 0 -max-workers "
        f"{plan.CEILING_WORKERS}`, ghz without `--rps`, wrk) finds the ceiling. Each fixed rate "
        f"runs {plan.FIXED_S:g} s, each ceiling {plan.CEILING_S:g} s; a scenario stops climbing "
        "once a rate fails (over 20 % errors, or under 70 % of the rate answered).",
        "- Through the edge, the load comes from 4 tool processes bound to 127.0.0.2-5 "
        "(`-laddr`), the rate split between them; the last column of the table of runs lists the "
        "addresses the rate-limit service was counting during each run (its Redis keys). Each "
        "request carries one of the bench users' tokens round robin (vegeta JSON targets with "
        "per-target headers), and each user reads their own order; a run fits the per-user "
        "limit's windows (mesh/bench/slots.py).",
        "- `direct`: orders' own port with an internal JWT (auth's token exchange); `sidecar "
        "pair`: the edge sidecar's loopback upstream for orders (edge sidecar → mTLS → orders "
        "sidecar → orders), the same token. gRPC: users.GetUser with ghz, the internal JWT as "
        "metadata, to users' port or through the edge sidecar's users upstream.",
        "- Every run is one `mesh bench` command, listed with its figures in "
        "[Every run](#every-run).",
        *_resting(results),
        *_settling(results),
        "",
        "## Edge protocols and the mesh hop",
        "",
        "GET /orders/{id} of an existing order, p50 / p99 at each offered rate (bold: what went "
        "wrong; a rate under 95 % answered shows the rate that was):",
        "",
        *side_by_side(results, plan.GET_SCENARIOS, plan.GET_RATES),
        "",
        *_first_requests(results),
        "gRPC users.GetUser:",
        "",
        *side_by_side(results, plan.GRPC_SCENARIOS, plan.GRPC_RATES),
        "",
        "## POST /orders",
        "",
        "Through the edge, TLS HTTP/2, each request with an Idempotency-Key of its own, the "
        "payment taken synchronously:",
        "",
        *side_by_side(results, plan.POST_SCENARIOS, plan.POST_RATES),
        "",
        "Afterwards, in the orders and payments databases:",
        "",
        *_post_checks(results),
        "",
        "## Order → WebSocket PAID",
        "",
        *_ws_section(results),
        "",
        "## Kafka pipeline",
        "",
        *_kafka_section(results),
        "",
        "## Where a request spends its CPU",
        "",
        *_where_the_cpu_goes(results),
        "",
        "## Resources",
        "",
        *_resources(results),
        "## Latency against rate",
        "",
        *_plots(results),
        "",
        "## Every run",
        "",
        "The last three columns are shares of the whole machine (all its cores count 100 %) over "
        "the run: all it ran, what of that was neither the mesh nor the load tool, and the time "
        "the hypervisor gave to other guests (steal). A run with more of the last two had less "
        "of the machine than its neighbours.",
        "",
        *_every_run(results),
        "",
    ]
    return "\n".join(lines)
