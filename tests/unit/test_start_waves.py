from __future__ import annotations

from mesh.runtime.process import ProcessSpec
from mesh.runtime.start_waves import waves
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
