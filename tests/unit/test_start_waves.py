from __future__ import annotations

import functools
import threading

import pytest

from mesh.runtime import start_waves
from mesh.runtime.process import ProcessSpec
from mesh.runtime.start_waves import start_together, stop_order, waves
from mesh.topology import load


def spec(name: str) -> ProcessSpec:
    return ProcessSpec(name=name, argv=["true"])


def names(found: list[list[list[ProcessSpec]]]) -> list[list[list[str]]]:
    return [[[s.name for s in chain] for chain in wave] for wave in found]


def test_the_instances_of_a_service_start_together_each_before_its_sidecar() -> None:
    order = ["consul", "kafka-1", "kafka-2", "users-1", "users-1-sidecar", "users-2",
             "users-2-sidecar", "auth-1", "auth-1-sidecar", "auth-2", "auth-2-sidecar"]  # fmt: skip

    assert names(waves(load(), [spec(n) for n in order])) == [
        [["consul"]],
        [["kafka-1"]],
        [["kafka-2"]],
        [["users-1", "users-1-sidecar"], ["users-2", "users-2-sidecar"]],
        [["auth-1", "auth-1-sidecar"], ["auth-2", "auth-2-sidecar"]],
    ]


def test_workers_and_edges_start_together_and_what_follows_them_after() -> None:
    order = ["payments-worker-1", "payments-worker-2", "redis", "ratelimit", "edge-1",
             "edge-1-sidecar", "edge-2", "edge-2-sidecar", "balancer", "watchdog"]  # fmt: skip

    assert names(waves(load(), [spec(n) for n in order])) == [
        [["payments-worker-1"], ["payments-worker-2"]],
        [["redis"]],
        [["ratelimit"]],
        [["edge-1", "edge-1-sidecar"], ["edge-2", "edge-2-sidecar"]],
        [["balancer"]],
        [["watchdog"]],
    ]


def test_the_chains_of_a_wave_start_at_once_and_their_preparations_one_at_a_time() -> None:
    """Each chain's start waits for the other's (a barrier), so they overlap; the first
    preparation waits a while for the second to begin too, which the lock does not let it."""
    second_began = threading.Event()
    began: list[str] = []
    overlapped: list[bool] = []
    both_starting = threading.Barrier(2, timeout=10)

    def prepare(name: str) -> None:
        began.append(name)
        if len(began) == 2:
            second_began.set()
        else:
            overlapped.append(second_began.wait(timeout=0.5))

    def start(spec: ProcessSpec) -> None:
        assert spec.before_start is not None
        spec.before_start()
        both_starting.wait()

    wave = [
        [ProcessSpec(name=n, argv=["true"], before_start=functools.partial(prepare, n))]
        for n in ("edge-1", "edge-2")
    ]
    start_together(wave, start)

    assert sorted(began) == ["edge-1", "edge-2"]
    assert overlapped == [False]


def test_a_failed_chain_is_raised_once_the_others_have_ended() -> None:
    ended: list[str] = []

    def start(spec: ProcessSpec) -> None:
        if spec.name == "users-1":
            raise RuntimeError("users-1 exited during start-up")
        ended.append(spec.name)

    wave = [[spec("users-1"), spec("users-1-sidecar")], [spec("users-2"), spec("users-2-sidecar")]]
    with pytest.raises(RuntimeError, match="users-1 exited"):
        start_together(wave, start)
    assert ended == ["users-2", "users-2-sidecar"]


def test_the_stop_is_the_starts_reverse_a_sidecar_before_its_instance() -> None:
    order = ["consul", "users-1", "users-1-sidecar", "users-2", "users-2-sidecar", "watchdog"]

    assert names(stop_order(load(), [spec(n) for n in order])) == [
        [["watchdog"]],
        [["users-1-sidecar", "users-1"], ["users-2-sidecar", "users-2"]],
        [["consul"]],
    ]


HOST_3 = ["consul-server-3", "consul-agent-host-3", "kafka-3", "users-1", "users-1-sidecar",
          "auth-2", "auth-2-sidecar", "notifications-1", "notifications-1-sidecar", "orders-2",
          "orders-2-sidecar", "payments-worker-1", "redis", "edge-2", "edge-2-sidecar"]  # fmt: skip


def test_a_host_brought_back_starts_its_instances_of_every_kind_at_once() -> None:
    others = {"users-2", "auth-1", "notifications-2", "orders-1", "payments-worker-2", "edge-1"}
    found = start_waves.beside_running(load(), [spec(n) for n in HOST_3], others.__contains__)
    assert names(found) == [
        [["consul-server-3"]],
        [["consul-agent-host-3"]],
        [["kafka-3"]],
        [["users-1", "users-1-sidecar"], ["auth-2", "auth-2-sidecar"],
         ["notifications-1", "notifications-1-sidecar"], ["orders-2", "orders-2-sidecar"],
         ["payments-worker-1"]],
        [["redis"]],
        [["edge-2", "edge-2-sidecar"]],
    ]  # fmt: skip


def test_a_kind_with_no_instance_running_elsewhere_waits_for_what_it_relies_on() -> None:
    order = ["users-1", "users-1-sidecar", "auth-1", "auth-1-sidecar", "orders-1",
             "orders-1-sidecar"]  # fmt: skip
    found = start_waves.beside_running(load(), [spec(n) for n in order], {"users-2"}.__contains__)
    assert names(found) == [
        [["users-1", "users-1-sidecar"]],
        [["auth-1", "auth-1-sidecar"]],
        [["orders-1", "orders-1-sidecar"]],
    ]
    every_instance = start_waves.beside_running(
        load(), [spec(n) for n in order], {"users-2", "auth-2", "orders-2"}.__contains__
    )
    assert names(every_instance) == [[["users-1", "users-1-sidecar"], ["auth-1", "auth-1-sidecar"],
                                      ["orders-1", "orders-1-sidecar"]]]  # fmt: skip
