"""Which processes start together, and stop together: the instances of one service (each
one's process, then its sidecar), of one worker group, of the edge; and, when they start into
a mesh that runs on, the instances of every kind that has an instance running elsewhere
(`beside_running`). Nothing else: the order between the rest is what their starts rely on
(Consul before what registers, the brokers one by one, the services before the edge, the
watchdog last), and the stop is its reverse.

`mesh up` of the full mesh spent ~45 s starting the twelve service instances, the two workers
and the two edges one after another, 1-2 s each, most of it a Python process importing its
modules while the other core idled; `mesh down` spent ~17 s stopping them, ~0.7 s each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from mesh.runtime.process import ProcessSpec
from mesh.topology import Topology

# A wave is one or more chains started at once; a chain's processes start one after another.
Chain = list[ProcessSpec]
Wave = list[Chain]


def replicas(topology: Topology) -> dict[str, tuple[str, str]]:
    """Each process of a replicated kind: (its kind, the instance it belongs to)."""
    found: dict[str, tuple[str, str]] = {}
    for instance in topology.instances():
        found[instance.id] = (instance.service, instance.id)
        found[f"{instance.id}-sidecar"] = (instance.service, instance.id)
    for workers in topology.workers:
        for worker in workers.instances:
            found[worker] = (workers.name, worker)
    for edge in topology.edge.instances:
        found[edge.id] = ("edge", edge.id)
        found[f"{edge.id}-sidecar"] = ("edge", edge.id)
    return found


def waves(topology: Topology, specs: Sequence[ProcessSpec]) -> list[Wave]:
    """`specs` (in start order) as waves: the consecutive processes of one replicated kind form
    one wave with a chain per instance; every other process is a wave of its own."""
    kinds = replicas(topology)
    result: list[Wave] = []
    current_kind: str | None = None
    chains: dict[str, Chain] = {}
    for spec in specs:
        kind, instance = kinds.get(spec.name, (None, spec.name))
        if kind is None or kind != current_kind:
            chains = {}
            result.append([])
        current_kind = kind
        if instance not in chains:
            chains[instance] = []
            result[-1].append(chains[instance])
        chains[instance].append(spec)
    return result


def beside_running(
    topology: Topology, specs: Sequence[ProcessSpec], running: Callable[[str], object]
) -> list[Wave]:
    """The waves of `specs` (in start order) for starting them while the rest of the mesh runs
    on: consecutive waves of replicated kinds become one when each of their kinds has an
    instance running outside `specs`, since what those rely on runs already. A host brought
    back starts its users, auth, notifications and orders instances and its payment worker
    at once, instead of one service after another (~8 s each on the busy machine)."""
    kinds = replicas(topology)
    starting = {kinds.get(spec.name, (None, spec.name))[1] for spec in specs}

    def runs_elsewhere(kind: str) -> bool:
        others = {instance for k, instance in kinds.values() if k == kind} - starting
        return any(running(instance) for instance in others)

    def served(wave: Wave) -> bool:
        kind = kinds.get(wave[0][0].name, (None, ""))[0]
        return kind is not None and runs_elsewhere(kind)

    result: list[Wave] = []
    merging = False
    for wave in waves(topology, specs):
        joins = served(wave)
        if joins and merging:
            result[-1].extend(wave)
        else:
            result.append(list(wave))
        merging = joins
    return result


def together(wave: Wave, step: Callable[[ProcessSpec], None]) -> None:
    """Each chain of the wave in a thread of its own, `step` on its processes one after
    another; the first failure raised once every chain has ended (a chain stops at its
    failure)."""

    def run(chain: Chain) -> None:
        for spec in chain:
            step(spec)

    if len(wave) == 1:
        run(wave[0])
        return
    with ThreadPoolExecutor(max_workers=len(wave)) as pool:
        ends = [pool.submit(run, chain) for chain in wave]
    for end in ends:
        end.result()


def start_together(wave: Wave, start: Callable[[ProcessSpec], None]) -> None:
    """The wave's chains started together (`together`), with the processes' `before_start`
    steps one at a time: they make what instances share on a first start (the edges' one
    certificate and key, made twice at once, left edge-1 with one edge's key and the other's
    certificate). Only the processes' own start-up overlaps."""
    preparing = threading.Lock()

    def alone(spec: ProcessSpec) -> ProcessSpec:
        prepare = spec.before_start
        if prepare is None:
            return spec

        def locked() -> None:
            with preparing:
                prepare()

        return replace(spec, before_start=locked)

    together([[alone(spec) for spec in chain] for chain in wave], start)


def stop_order(topology: Topology, specs: Sequence[ProcessSpec]) -> list[Wave]:
    """The waves of `specs` (in start order) for stopping them: the last wave first, each chain
    from its last process (a sidecar before its instance)."""
    return [[chain[::-1] for chain in wave] for wave in reversed(waves(topology, specs))]
