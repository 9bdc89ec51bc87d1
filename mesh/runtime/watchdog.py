"""The watchdog: restarts a mesh process that died, with backoff, unless it was stopped on purpose.

Like Kubernetes' restartPolicy: Always with its CrashLoopBackOff. A process found dead is started
again after a delay that doubles with each restart in a row (BACKOFF_INITIAL_S up to
BACKOFF_MAX_S) and goes back to the start once the process has stayed up for STABLE_AFTER_S.
`mesh kill NAME` is a crash (the watchdog brings it back); `mesh stop NAME` holds it down until
`mesh start NAME`. The watchdog only starts processes: readiness is for `mesh status` to tell.

It runs as a process of its own (`python -m mesh.runtime.watchdog`, the last one `mesh up` starts
and the first `mesh down` stops), writes every process's restarts to `<state>/restarts.json` for
`mesh status`, and exports them for Prometheus: shopmesh_process_restarts_total{process} and
shopmesh_process_up{process}, with the ProcessCrashLooping alert on top.

Between looks it waits on a pidfd of every process it found running, so a death wakes it at
once; it looks at every pid file only every LOOK_S (for processes `mesh start` began meanwhile)
or when a restart falls due. Looking four times a second was its whole idle cost.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from mesh.runtime import process
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
# Doublings past this one only reach the cap (and past about 1,000, 2**n is no float).
MAX_DOUBLINGS = math.ceil(math.log2(BACKOFF_MAX_S / BACKOFF_INITIAL_S))
STABLE_AFTER_S = 60.0
LOOK_S = 1.0
NAME = "watchdog"


def held_marker(state: StateDir, name: str) -> Path:
    return state.root / "held" / name


def hold(state: StateDir, name: str) -> None:
    """Keep `name` down: the watchdog leaves it alone until `release`."""
    marker = held_marker(state, name)
    marker.parent.mkdir(exist_ok=True)
    marker.touch()


def release(state: StateDir, name: str) -> None:
    held_marker(state, name).unlink(missing_ok=True)


def release_all(state: StateDir) -> None:
    folder = state.root / "held"
    if folder.exists():
        for marker in folder.iterdir():
            marker.unlink()


def is_held(state: StateDir, name: str) -> bool:
    return held_marker(state, name).exists()


@dataclass
class Restarts:
    """One process's restarts in a row and in all, as `mesh status` shows them."""

    total: int = 0
    in_a_row: int = 0
    next_attempt_at: float | None = None  # monotonic; None while it runs (or is held)
    last_restart: float | None = None  # wall clock of the last restart


def backoff_s(restarts_in_a_row: int) -> float:
    """The wait before restart number `restarts_in_a_row + 1` of a process that keeps dying."""
    return min(BACKOFF_INITIAL_S * 2.0 ** min(restarts_in_a_row, MAX_DOUBLINGS), BACKOFF_MAX_S)


class Watchdog:
    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        state: StateDir,
        *,
        start: Callable[[StateDir, ProcessSpec], process.Running] = process.start,
        running: Callable[[StateDir, str], process.Running | None] = process.running,
        clock: Callable[[], float] = time.monotonic,
        on_restart: Callable[[str], None] = lambda _name: None,
    ) -> None:
        self.specs = list(specs)
        self.state = state
        self._start = start
        self._running = running
        self._clock = clock
        self._on_restart = on_restart
        self.restarts = {spec.name: Restarts() for spec in self.specs}
        self.up: dict[str, bool] = {}
        self.pids: dict[str, int] = {}

    def tick(self) -> bool:
        """Look at every process once; start the ones due. True if anything changed."""
        changed = False
        now = self._clock()
        for spec in self.specs:
            record = self.restarts[spec.name]
            current = self._running(self.state, spec.name)
            self.up[spec.name] = current is not None
            self.pids.pop(spec.name, None)
            if current is not None:
                self.pids[spec.name] = current.pid
                if record.in_a_row and time.time() - current.started >= STABLE_AFTER_S:
                    record.in_a_row = 0
                    changed = True
                continue
            if is_held(self.state, spec.name):
                changed |= record.next_attempt_at is not None
                record.next_attempt_at = None
                continue
            if record.next_attempt_at is None:
                record.next_attempt_at = now + backoff_s(record.in_a_row)
                changed = True
                continue
            if now < record.next_attempt_at:
                continue
            record.next_attempt_at = None
            record.total += 1
            record.in_a_row += 1
            record.last_restart = time.time()
            changed = True
            try:
                self._start(self.state, spec)
            except Exception as exc:  # a failed start is a crash like any other: back off
                print(f"{NAME}: starting {spec.name} failed: {exc}", file=sys.stderr, flush=True)
            else:
                print(f"{NAME}: restarted {spec.name} ({record.total} in all)", flush=True)
            self._on_restart(spec.name)
        return changed

    def due_in_s(self) -> float:
        """Seconds until the next restart falls due; infinity when none is waiting."""
        due = [r.next_attempt_at for r in self.restarts.values() if r.next_attempt_at is not None]
        return max(min(due) - self._clock(), 0.0) if due else math.inf

    def write(self) -> None:
        save_restarts(self.state, {
            name: {"total": r.total, "in_a_row": r.in_a_row, "last_restart": r.last_restart}
            for name, r in self.restarts.items()
        })  # fmt: skip


class Exits:
    """Waits until one of the watched processes exits (a pidfd each, any process, not only a
    child), `wake_fd` has something to read (what it had is read), or a timeout passes."""

    def __init__(self, wake_fd: int | None = None) -> None:
        self._fds: dict[int, int] = {}  # pid -> its pidfd
        # Pids whose pidfd woke us while the look after it still found them running (a pid taken
        # by a new process): watched by the looks only, so that a wait never spins.
        self._woke: set[int] = set()
        self._look_now = False
        self._wake_fd = wake_fd

    def watch(self, pids: Iterable[int]) -> None:
        wanted = set(pids)
        for pid in self._fds.keys() - wanted:
            os.close(self._fds.pop(pid))
        self._woke &= wanted
        for pid in wanted - self._fds.keys() - self._woke:
            try:
                self._fds[pid] = os.pidfd_open(pid)
            except OSError:  # gone meanwhile: look again at once
                self._look_now = True

    def wait(self, timeout_s: float) -> None:
        if self._look_now:
            self._look_now = False
            return
        poller = select.poll()
        by_fd = {fd: pid for pid, fd in self._fds.items()}
        for fd in [*by_fd, *([] if self._wake_fd is None else [self._wake_fd])]:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(timeout_s * 1000):
            if fd == self._wake_fd:
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 64):
                        pass
                continue
            pid = by_fd[fd]
            os.close(self._fds.pop(pid))
            self._woke.add(pid)


def restarts_file(state: StateDir) -> Path:
    return state.root / "restarts.json"


def save_restarts(state: StateDir, records: dict[str, dict[str, int | float | None]]) -> None:
    path = restarts_file(state)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(records, indent=2))
    partial.replace(path)


def load_restarts(state: StateDir) -> dict[str, int]:
    """Restarts in all, by process name, as the running watchdog counted them."""
    try:
        records = json.loads(restarts_file(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {name: int(record.get("total", 0)) for name, record in records.items()}


class WatchdogMetrics:
    """shopmesh_process_restarts_total and shopmesh_process_up, served on host:port/metrics."""

    def __init__(self, names: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self._restarts = Counter(
            "shopmesh_process_restarts",
            "Times the watchdog restarted a mesh process that had died",
            ["process"],
            registry=self.registry,
        )
        self._up = Gauge(
            "shopmesh_process_up", "1 while the mesh process runs", ["process"],
            registry=self.registry,
        )  # fmt: skip
        for name in names:
            self._restarts.labels(name)

    def restarted(self, name: str) -> None:
        self._restarts.labels(name).inc()

    def show(self, up: dict[str, bool]) -> None:
        for name, alive in up.items():
            self._up.labels(name).set(int(alive))

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


def main() -> int:
    from mesh.runtime.sizes import topology_for
    from mesh.runtime.supervisor import Mesh

    state = StateDir(Path(os.environ["SHOPMESH_STATE_DIR"]))
    mesh = Mesh.create(topology_for(state), state)
    specs = [spec for spec in mesh.specs() if spec.name != NAME]
    metrics = WatchdogMetrics(spec.name for spec in specs)
    watchdog = Watchdog(specs, state, on_restart=metrics.restarted)
    metrics.serve(mesh.placement.listen(NAME), mesh.topology.watchdog_port)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{NAME}: watching {len(specs)} processes", flush=True)
    watchdog.write()
    # A signal writes to this pipe, so a stop ends the wait at once.
    signals, signal_writer = os.pipe()
    for fd in (signals, signal_writer):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(signal_writer)
    exits = Exits(wake_fd=signals)
    while not stopping:
        if watchdog.tick():
            watchdog.write()
        metrics.show(watchdog.up)
        exits.watch(watchdog.pids.values())
        exits.wait(min(LOOK_S, watchdog.due_in_s()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
