from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from mesh.runtime import process
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from tests.support import wait_for


def sleeper(name: str) -> ProcessSpec:
    return ProcessSpec(name=name, argv=[sys.executable, "-c", "import time; time.sleep(60)"])


def test_started_process_is_tracked_by_its_pid_file_and_stopped(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    started = process.start(state, sleeper("sleepy"))

    assert process.running(state, "sleepy") == started
    assert process.stop(state, "sleepy", timeout=5)
    assert process.running(state, "sleepy") is None
    assert not (state.pids / "sleepy.json").exists()


def test_kill_is_a_sigkill_and_the_pid_file_is_cleared(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    process.start(state, sleeper("victim"))

    assert process.kill(state, "victim")
    wait_for(lambda: process.running(state, "victim") is None, timeout=5, what="victim to die")


def test_a_pid_file_whose_pid_now_belongs_to_another_process_is_ignored(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    # Our own pid with a start time that does not match it: a reused pid.
    (state.pids / "ghost.json").write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))

    assert process.running(state, "ghost") is None
    assert not process.stop(state, "ghost")


def test_a_start_that_finds_it_running_returns_it_without_checking_its_ports(
    tmp_path: Path,
) -> None:
    # The watchdog may start a process between a `mesh start`'s look and its own start: the
    # second start must take the running one, not refuse its ports as taken by a stranger.
    state = StateDir(tmp_path)
    state.ensure()
    first = process.start(state, sleeper("twice"))
    checked: list[str] = []

    again = process.start(state, sleeper("twice"), precondition=lambda: checked.append("ports"))

    assert again == first
    assert checked == []
    process.kill(state, "twice")


def test_a_failing_precondition_starts_nothing(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()

    def taken() -> None:
        raise RuntimeError("port taken")

    with pytest.raises(RuntimeError, match="port taken"):
        process.start(state, sleeper("blocked"), precondition=taken)
    assert process.running(state, "blocked") is None


def test_a_readiness_check_that_raises_means_not_ready_yet(tmp_path: Path) -> None:
    # Consul answers its CA roots with a plain-text 500 while the CA initialises: the check
    # raising must not end the start-up, only delay it.
    state = StateDir(tmp_path)
    state.ensure()
    answers = iter([ValueError("CA has not finished initializing"), None])

    def ready() -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    spec = replace(sleeper("starting"), ready=ready, ready_timeout=10)
    process.start(state, spec)
    try:
        process.wait_ready(state, spec)
        assert next(answers, "all used") == "all used"
    finally:
        process.stop(state, "starting", timeout=5)


def test_a_readiness_check_that_finds_the_start_cannot_succeed_ends_the_wait_at_once(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    checks: list[str] = []

    def ready() -> str | None:
        checks.append("asked")
        raise process.ProcessFailed("doomed", "refused for good", process.log_path(state, "doomed"))

    spec = replace(sleeper("doomed"), ready=ready, ready_timeout=60)
    process.start(state, spec)
    try:
        with pytest.raises(process.ProcessFailed, match="refused for good"):
            process.wait_ready(state, spec)
        assert checks == ["asked"]
    finally:
        process.stop(state, "doomed", timeout=5)


def test_a_readiness_check_that_keeps_raising_names_its_error_at_the_deadline(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    state.ensure()

    def ready() -> str | None:
        raise ValueError("CA has not finished initializing")

    spec = replace(sleeper("stuck"), ready=ready, ready_timeout=0.3)
    process.start(state, spec)
    try:
        with pytest.raises(process.ProcessFailed, match="CA has not finished initializing"):
            process.wait_ready(state, spec)
    finally:
        process.stop(state, "stuck", timeout=5)


def test_a_child_that_exited_is_reaped_and_told_dead(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    started = process.start(state, replace(sleeper("brief"), argv=[sys.executable, "-c", "0"]))
    wait_for(lambda: psutil.Process(started.pid).status() == "zombie", timeout=10,
             what="the child to exit")  # fmt: skip

    assert process.running(state, "brief") is None  # reaped: dead for sure
    assert not (state.pids / "brief.json").exists()


def test_a_process_that_exits_during_start_up_takes_what_it_left_behind_with_it(
    tmp_path: Path,
) -> None:
    # As `consul connect envoy` might: the process leaves a child running in its group and exits.
    state = StateDir(tmp_path)
    state.ensure()
    orphan_pid_file = tmp_path / "orphan.pid"
    leave_a_child = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(orphan_pid_file)!r}, 'w').write(str(child.pid))"
    )
    spec = replace(
        sleeper("leaver"), argv=[sys.executable, "-c", leave_a_child], ready=lambda: "not yet"
    )
    process.start(state, spec)

    with pytest.raises(process.ProcessFailed, match="exited during start-up"):
        process.wait_ready(state, spec)
    orphan = int(orphan_pid_file.read_text())
    wait_for(lambda: not psutil.pid_exists(orphan)
             or psutil.Process(orphan).status() == "zombie",
             timeout=5, what="the child it left behind to be killed")  # fmt: skip


def test_a_look_that_found_it_dead_leaves_the_pid_file_of_its_restart(tmp_path: Path) -> None:
    # The watchdog judged the old process dead while a `mesh start` started it again: the
    # watchdog must not delete the new pid file (the new process would be orphaned).
    state = StateDir(tmp_path)
    state.ensure()
    restarted = process.start(state, sleeper("again"))
    try:
        path = state.pids / "again.json"
        stale = json.dumps({"pid": os.getpid(), "started": 1.0})
        process._forget(path, stale)

        assert path.exists()
        assert process.running(state, "again") == restarted
    finally:
        process.stop(state, "again", timeout=5)


def started_elsewhere(state: StateDir, name: str) -> int:
    """A process another `mesh` started (as `mesh down` finds what `mesh up -d` started): not
    this process's child, so nothing here can reap it; its pid file as `start` writes one."""
    launcher = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(child.pid)"
    )
    pid = int(subprocess.run([sys.executable, "-c", launcher], capture_output=True,
                             text=True, check=True).stdout)  # fmt: skip
    started = psutil.Process(pid).create_time()
    (state.pids / f"{name}.json").write_text(json.dumps({"pid": pid, "started": started}))
    return pid


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# A look at a process gone from /proc waits out an exec window before calling it dead (see
# `running`); a stop or kill that signalled it knows better. With the window an hour long,
# either would hang until pytest's timeout.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "end",
    [lambda state, name: process.stop(state, name, timeout=30), process.kill],
    ids=["stop", "kill"],
)
def test_a_stop_or_kill_of_a_process_it_did_not_start_ends_when_the_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: Callable[[StateDir, str], bool]
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    pid = started_elsewhere(state, "elsewhere")
    monkeypatch.setattr(process, "EXEC_WINDOW_S", 3600.0)

    assert end(state, "elsewhere")
    assert gone(pid)
    assert not (state.pids / "elsewhere.json").exists()
