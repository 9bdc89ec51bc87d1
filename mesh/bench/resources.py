"""What the mesh's processes use: CPU time per component (around a run, per request; at idle)
and memory (PSS, which shares each shared page among the processes that map it).

A component is a process the runtime started (its pid file) with all its descendants, e.g.
Postgres' backends; a Postgres node is its Patroni and the Postgres Patroni started, which is not
Patroni's child.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from mesh.runtime import postgres, process
from mesh.runtime.paths import StateDir


def components(state: StateDir) -> dict[str, list[psutil.Process]]:
    """Each running component's root processes."""
    found = {}
    for pid_file in sorted(state.pids.glob("*.json")):
        running = process.running(state, pid_file.stem)
        if running is not None:
            with contextlib.suppress(psutil.Error):
                found[pid_file.stem] = [psutil.Process(running.pid)]
                found[pid_file.stem] += filter(None, [postgres.postmaster(state, pid_file.stem)])
    return found


def uptime_s(state: StateDir) -> float:
    """Seconds since the mesh's most recent process start (0 if nothing runs)."""
    now = time.time()
    ages = []
    for roots in components(state).values():
        with contextlib.suppress(psutil.Error):
            ages.append(now - roots[0].create_time())
    return min(ages, default=0.0)


def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found += [root, *root.children(recursive=True)]
    return found


def _cpu_s(roots: list[psutil.Process]) -> float:
    """CPU seconds of the processes and their descendants, live and reaped."""
    total = 0.0
    for proc in _tree(roots):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_seconds(state: StateDir) -> dict[str, float]:
    return {name: _cpu_s(roots) for name, roots in components(state).items()}


def pss_bytes(state: StateDir) -> dict[str, int]:
    sizes = {}
    for name, roots in components(state).items():
        total = 0
        for proc in _tree(roots):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_full_info().pss
        sizes[name] = total
    return sizes


@dataclass(frozen=True)
class MachineCpu:
    """The whole machine's CPU seconds over a span, all cores together: what ran (user, system,
    interrupts) and what the hypervisor gave to others (steal)."""

    busy_s: float
    steal_s: float

    @staticmethod
    def between(before: Any, after: Any) -> MachineCpu:
        def spent(field: str) -> float:
            return max(getattr(after, field, 0.0) - getattr(before, field, 0.0), 0.0)

        busy = sum(spent(f) for f in ("user", "nice", "system", "irq", "softirq"))
        return MachineCpu(busy_s=busy, steal_s=spent("steal"))


class CpuMeter:
    """CPU seconds each component spent between entering and leaving, and the machine's."""

    def __init__(self, state: StateDir) -> None:
        self._state = state
        self.spent: dict[str, float] = {}
        self.machine = MachineCpu(0.0, 0.0)
        self.wall_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = cpu_seconds(self._state)
        self._machine_before = psutil.cpu_times()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._started
        self.machine = MachineCpu.between(self._machine_before, psutil.cpu_times())
        after = cpu_seconds(self._state)
        self.spent = {
            name: max(after[name] - self._before[name], 0.0)
            for name in after
            if name in self._before
        }

    def percent_of_machine(self, cpu_s: float) -> float:
        """`cpu_s` CPU seconds over the span, in percent of all the machine's cores."""
        return 100 * cpu_s / max(self.wall_s * (psutil.cpu_count() or 1), 1e-9)

    def machine_shares(self, tool_s: float) -> dict[str, float]:
        """In percent of the machine over the span: all it ran, what ran outside the mesh and
        the load tool (another tenant of the machine, a build, the kernel's own threads), and
        what the hypervisor took (steal): a run next to another's figures may have had less."""
        outside = max(self.machine.busy_s - sum(self.spent.values()) - tool_s, 0.0)
        return {
            "busy_percent": self.percent_of_machine(self.machine.busy_s),
            "outside_percent": self.percent_of_machine(outside),
            "steal_percent": self.percent_of_machine(self.machine.steal_s),
        }

    def per_request_ms(self, requests: int) -> dict[str, float]:
        if not requests:
            return {}
        return {name: 1000 * s / requests for name, s in sorted(self.spent.items())}


def idle_cpu(state: StateDir, seconds: float) -> CpuMeter:
    with CpuMeter(state) as meter:
        time.sleep(seconds)
    return meter


def machine_percent(state: StateDir, seconds: float) -> float:
    """The mesh's CPU over `seconds`, in percent of the whole machine."""
    meter = idle_cpu(state, seconds)
    return meter.percent_of_machine(sum(meter.spent.values()))


def wait_until_steady(
    measure: Callable[[], float],
    windows: int,
    tolerance_percent: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """Measure windows until the mean of the last `windows` is at most `tolerance_percent`
    below the mean of the `windows` before them, i.e. the mesh's CPU no longer falling as it
    does for minutes after a start: the seconds that took, or None when `timeout_s` ran out."""
    started = clock()
    seen: list[float] = []
    while clock() - started < timeout_s:
        seen.append(measure())
        if len(seen) >= 2 * windows:
            before, last = seen[-2 * windows : -windows], seen[-windows:]
            if (sum(before) - sum(last)) / windows <= tolerance_percent:
                return clock() - started
    return None


def wait_until_quiet(
    measure: Callable[[], float],
    ceiling_percent: float,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """Measure windows (`measure()`: the mesh's CPU over one, in percent of the machine) until
    one is at most `ceiling_percent`: the seconds that took, or None when `timeout_s` ran out."""
    started = clock()
    while clock() - started < timeout_s:
        if measure() <= ceiling_percent:
            return clock() - started
    return None
