"""The watchdog's decisions, on fake processes and a fake clock: restart what died, with a
backoff that doubles and resets, and leave alone what was stopped on purpose. Its wait between
looks, on real processes: a death or a signal ends it."""

import math
import os
import subprocess
import time

from mesh.runtime import watchdog
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec, Running
from mesh.runtime.watchdog import BACKOFF_INITIAL_S, BACKOFF_MAX_S, Exits, Watchdog, backoff_s


class Processes:
    """What is running, and every start the watchdog asks for."""

    def __init__(self, *alive: str) -> None:
        self.alive = {name: Running(pid=1, started=time.time()) for name in alive}
        self.starts: list[str] = []
        self.failing: set[str] = set()

    def running(self, _state: StateDir, name: str) -> Running | None:
        return self.alive.get(name)

    def start(self, _state: StateDir, spec: ProcessSpec) -> Running:
        self.starts.append(spec.name)
        if spec.name in self.failing:
            raise RuntimeError(f"{spec.name} exited at once")
        self.alive[spec.name] = Running(pid=2, started=time.time())
        return self.alive[spec.name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watching(tmp_path, processes: Processes, clock: Clock, *names: str) -> Watchdog:
    state = StateDir(tmp_path)
    state.ensure()
    specs = [ProcessSpec(name=name, argv=["true"]) for name in names]
    return Watchdog(specs, state, start=processes.start, running=processes.running, clock=clock)


def test_a_dead_process_is_restarted_after_the_first_backoff(tmp_path):
    processes, clock = Processes("orders-1"), Clock()
    dog = watching(tmp_path, processes, clock, "orders-1", "payments-1")
    dog.tick()
    assert processes.starts == []
    clock.now += BACKOFF_INITIAL_S
    dog.tick()
    assert processes.starts == ["payments-1"]
    assert dog.restarts["payments-1"].total == 1
    assert dog.restarts["orders-1"].total == 0


def test_a_process_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_maximum(tmp_path):
    processes, clock = Processes(), Clock()
    processes.failing.add("edge")
    dog = watching(tmp_path, processes, clock, "edge")
    waits = []
    for _ in range(9):
        dog.tick()
        due = dog.restarts["edge"].next_attempt_at
        waits.append(due - clock.now)
        clock.now = due
        dog.tick()
    assert waits == [backoff_s(n) for n in range(9)]
    assert waits[:3] == [BACKOFF_INITIAL_S, 2 * BACKOFF_INITIAL_S, 4 * BACKOFF_INITIAL_S]
    assert waits[-1] == BACKOFF_MAX_S
    assert dog.restarts["edge"].total == 9


def test_the_backoff_stays_at_the_maximum_however_long_a_process_keeps_dying():
    # At 1,024 restarts in a row 2**1024 overflowed a float and ended the watchdog (8.5 hours of a
    # crash loop at one restart every 30 s).
    assert backoff_s(1024) == backoff_s(100_000) == BACKOFF_MAX_S


def test_the_backoff_starts_afresh_once_a_restarted_process_has_stayed_up(tmp_path):
    processes, clock = Processes(), Clock()
    dog = watching(tmp_path, processes, clock, "auth-1")
    for _ in range(3):  # three crashes in a row
        dog.tick()
        clock.now = dog.restarts["auth-1"].next_attempt_at
        dog.tick()
        del processes.alive["auth-1"]
    assert dog.restarts["auth-1"].in_a_row == 3
    processes.alive["auth-1"] = Running(pid=3, started=time.time() - watchdog.STABLE_AFTER_S)
    dog.tick()
    assert dog.restarts["auth-1"].in_a_row == 0
    assert dog.restarts["auth-1"].total == 3


def test_a_held_process_stays_down_until_it_is_released(tmp_path):
    processes, clock = Processes(), Clock()
    dog = watching(tmp_path, processes, clock, "kafka-2")
    watchdog.hold(dog.state, "kafka-2")
    for _ in range(5):
        dog.tick()
        clock.now += BACKOFF_MAX_S
    assert processes.starts == []
    watchdog.release(dog.state, "kafka-2")
    dog.tick()
    clock.now += BACKOFF_INITIAL_S
    dog.tick()
    assert processes.starts == ["kafka-2"]


def test_restart_counts_reach_mesh_status_through_the_state_dir(tmp_path):
    processes, clock = Processes(), Clock()
    dog = watching(tmp_path, processes, clock, "users-1")
    dog.tick()
    clock.now += BACKOFF_INITIAL_S
    dog.tick()
    dog.write()
    assert watchdog.load_restarts(dog.state) == {"users-1": 1}


def test_up_forgets_every_hold(tmp_path):
    state = StateDir(tmp_path)
    state.ensure()
    watchdog.hold(state, "orders-1")
    watchdog.hold(state, "kafka-3")
    watchdog.release_all(state)
    assert not watchdog.is_held(state, "orders-1") and not watchdog.is_held(state, "kafka-3")


def test_the_wait_lasts_until_the_next_restart_falls_due(tmp_path):
    processes, clock = Processes("orders-1"), Clock()
    dog = watching(tmp_path, processes, clock, "orders-1", "payments-1")
    assert dog.due_in_s() == math.inf
    dog.tick()
    assert dog.pids == {"orders-1": 1}
    assert dog.due_in_s() == BACKOFF_INITIAL_S
    clock.now += 2 * BACKOFF_INITIAL_S
    assert dog.due_in_s() == 0.0


def test_a_watched_process_that_dies_ends_the_wait():
    proc = subprocess.Popen(["sleep", "60"])
    exits = Exits()
    exits.watch([proc.pid])
    proc.kill()
    started = time.monotonic()
    exits.wait(30)
    assert time.monotonic() - started < 30
    proc.wait()


def test_a_pid_that_ended_a_wait_ends_no_other_while_it_is_still_wanted():
    proc = subprocess.Popen(["sleep", "60"])
    exits = Exits()
    exits.watch([proc.pid])
    proc.kill()
    exits.wait(30)
    exits.watch([proc.pid])  # as if a look still found the pid running
    started = time.monotonic()
    exits.wait(0.3)
    assert time.monotonic() - started >= 0.3
    proc.wait()


def test_what_is_written_to_the_wake_fd_ends_the_wait_and_is_read():
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    try:
        os.write(writer, b"\x0f" * 100)
        started = time.monotonic()
        Exits(wake_fd=reader).wait(30)
        assert time.monotonic() - started < 30
        assert _read_or_none(reader) is None  # nothing left: the next wait is a wait
    finally:
        os.close(reader)
        os.close(writer)


def _read_or_none(fd: int) -> bytes | None:
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return None
