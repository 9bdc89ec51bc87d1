"""Start, stop and inspect the mesh's processes through pid files in the state directory.

A pid file records the pid and the process start time, so a pid reused by an unrelated
process after a reboot or a crash is never signalled.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import psutil

from mesh.runtime import hosts
from mesh.runtime.paths import OWNER_ONLY_FILE, PRIVATE_UMASK, StateDir, private_files


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    ports: tuple[int, ...] = ()
    # Returns None when ready, else a short reason it is not ready yet.
    ready: Callable[[], str | None] | None = None
    ready_timeout: float = 60.0
    before_start: Callable[[], None] | None = None
    # What it returns is ignored.
    after_ready: Callable[[], object] | None = None
    # Before a stop on purpose (`mesh stop`), not before a crash or `mesh down`: e.g. draining.
    before_stop: Callable[[], None] | None = None
    # The network namespace of its host (the hosts placement), where it runs and where its
    # steps and checks above run too; None: this process's own.
    namespace: str | None = None


@dataclass(frozen=True)
class Running:
    pid: int
    started: float


T = TypeVar("T")


def there(spec: ProcessSpec, call: Callable[[], T]) -> T:
    """`call()` where the process runs: in its host's network namespace, if it has one (its
    checks reach what its host keeps on its loopback; a child started there runs there)."""
    return hosts.call_in(spec.namespace, call) if spec.namespace else call()


def _pid_file(state: StateDir, name: str) -> Path:
    return state.pids / f"{name}.json"


def _reap(pid: int) -> bool:
    """Collect a dead child of this process so it does not linger as a zombie; True if it was
    one (it is dead for sure)."""
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == pid


EXEC_WINDOW_S = 1.0
EXEC_LOOK_INTERVAL_S = 0.05


def _alive(pid: int, started: float) -> bool | None:
    """Whether `pid` is the process started at `started`; None if that cannot be told yet: it
    is not found, or it is a zombie (a dead process not yet reaped, or, for a moment, the old
    leader of a multi-threaded process that execs from another thread)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return abs(proc.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return None


def running(state: StateDir, name: str) -> Running | None:
    path = _pid_file(state, name)
    try:
        text = path.read_text()
        record = json.loads(text)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid, started = int(record["pid"]), float(record["started"])
    alive = False if _reap(pid) else _alive(pid, started)
    # While a multi-threaded process (Go's `consul connect envoy` exec'ing Envoy) execs from a
    # thread other than its first, /proc/<pid> is briefly gone or shows the old leader as a
    # zombie; on a busy machine for longer than one look: look again for up to EXEC_WINDOW_S.
    # Only reaping it says for sure that a child of ours died. (A dead process that is not our
    # child is looked for that long once: its pid file goes with the first answer.)
    deadline = time.monotonic() + EXEC_WINDOW_S
    while alive is None and time.monotonic() < deadline:
        time.sleep(EXEC_LOOK_INTERVAL_S)
        alive = False if _reap(pid) else _alive(pid, started)
    if not alive:
        _forget(path, text)
        return None
    return Running(pid, started)


def _forget(path: Path, judged: str) -> None:
    """Remove the pid file of a process found dead, unless it changed meanwhile: while one
    look took its time (EXEC_WINDOW_S), the watchdog or a `mesh start` may have started the
    process again, and its new pid file must stay (without it the new process is orphaned)."""
    try:
        if path.read_text() == judged:
            path.unlink()
    except FileNotFoundError:
        pass


def log_path(state: StateDir, name: str) -> Path:
    return state.logs / f"{name}.log"


def open_log(path: Path) -> BinaryIO:
    """Append to a process's log, readable by its owner only (logs may name users and orders)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, OWNER_ONLY_FILE)
    os.fchmod(fd, OWNER_ONLY_FILE)
    return os.fdopen(fd, "ab")


def start(
    state: StateDir, spec: ProcessSpec, *, precondition: Callable[[], None] | None = None
) -> Running:
    """Start `spec` unless it runs. The check and the start hold the process's lock: the
    watchdog and a `mesh start` may try at the same moment, and only one may win.
    `precondition` (e.g. that its ports are free) runs under the lock, only when a start is due:
    a process the other one just started holds its ports rightly."""
    # Its lock, its config (written by before_start), its pid file and log, and all that it
    # writes itself (PRIVATE_UMASK): owner-only.
    with private_files(), (state.pids / f"{spec.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return there(spec, lambda: _start_unlocked(state, spec, precondition))


def _start_unlocked(
    state: StateDir, spec: ProcessSpec, precondition: Callable[[], None] | None
) -> Running:
    current = running(state, spec.name)
    if current:
        return current
    if precondition:
        precondition()
    if spec.before_start:
        spec.before_start()
    log = open_log(log_path(state, spec.name))
    log.write(f"\n--- mesh: starting {spec.name}: {' '.join(spec.argv)}\n".encode())
    log.flush()
    env = {**os.environ, **spec.env}
    user = spec.user or None
    proc = subprocess.Popen(
        spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd,
        env=env,
        start_new_session=True,
        umask=PRIVATE_UMASK,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )
    log.close()
    started = psutil.Process(proc.pid).create_time()
    record = {
        "pid": proc.pid,
        "started": started,
        "argv": spec.argv,
        "stop_signal": spec.stop_signal,
    }
    # Whole or not at all (a rename): a reader never takes a half-written file for no process.
    path = _pid_file(state, spec.name)
    written = path.with_name(f"{path.name}.new")
    written.write_text(json.dumps(record))
    written.replace(path)
    return Running(proc.pid, started)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def stop(state: StateDir, name: str, timeout: float = 15.0) -> bool:
    """Stop gracefully (the recorded stop signal), escalating to SIGKILL; True if it was running."""
    current = running(state, name)
    if not current:
        return False
    path = _pid_file(state, name)
    judged = path.read_text()
    signal_group(current.pid, int(json.loads(judged).get("stop_signal", signal.SIGTERM)))
    if _ended(current, timeout, STOP_LOOK_INTERVAL_S):
        _forget(path, judged)
        return True
    kill(state, name)
    return True


def kill(state: StateDir, name: str) -> bool:
    """SIGKILL the whole process group, as a crash would; True if it was running."""
    current = running(state, name)
    if not current:
        return False
    path = _pid_file(state, name)
    judged = path.read_text()
    signal_group(current.pid, signal.SIGKILL)
    if _ended(current, KILL_WAIT_S, KILL_LOOK_INTERVAL_S):
        _forget(path, judged)
    return True


STOP_LOOK_INTERVAL_S = 0.05
KILL_WAIT_S = 5.0
KILL_LOOK_INTERVAL_S = 0.02


def _ended(current: Running, timeout: float, interval: float) -> bool:
    """Whether a process this module signalled to end has ended within `timeout`.

    One look each time, without `running`'s exec window: a process gone from /proc (or a
    zombie) after the signal has ended, even one caught exec'ing, because a pending signal
    outlives exec and the new image has no handler for it yet. The window cost every stop
    and kill a second (`mesh down` of the full mesh spent 46 s in it)."""
    deadline = time.monotonic() + timeout
    while True:
        if _reap(current.pid) or _alive(current.pid, current.started) is not True:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_ready(state: StateDir, spec: ProcessSpec) -> None:
    if spec.ready is None:
        return
    started = running(state, spec.name)
    deadline = time.monotonic() + spec.ready_timeout
    reason = "no check ran"
    while time.monotonic() < deadline:
        if not running(state, spec.name):
            if started is not None:
                # Nothing it started may outlive it unseen (its pid file is gone): a child left
                # behind would hold its ports against the next start.
                signal_group(started.pid, signal.SIGKILL)
            raise ProcessFailed(spec.name, "exited during start-up", log_path(state, spec.name))
        try:
            reason = there(spec, spec.ready) or ""
        except ProcessFailed:  # the check found that waiting cannot help
            raise
        except Exception as exc:  # a half-started process may answer anything: not ready yet
            reason = f"readiness check failed: {exc!r}"
        if not reason:
            if spec.after_ready:
                there(spec, spec.after_ready)
            return
        time.sleep(0.1)
    raise ProcessFailed(
        spec.name,
        f"not ready after {spec.ready_timeout:.0f}s: {reason}",
        log_path(state, spec.name),
    )


class ProcessFailed(RuntimeError):
    def __init__(self, name: str, why: str, log: Path):
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        super().__init__(f"{name} {why}. Last lines of {log}:\n{tail}")
        self.name = name
