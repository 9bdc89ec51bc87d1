"""The cluster's SCRAM credentials brought to the principals of mesh/kafka/topics.yaml at start
(docs/security.md, "Kafka"): Kafka data formatted before SASL, or before a principal was added,
gets the missing credentials through the controllers (mesh/components/kafka_scram.py), and loses
nothing. Each node's marker file lists the principals its data holds credentials for: written
when the node is formatted with them, and again once the controllers took the missing ones; so
a cluster that has them all is asked nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from mesh.components import kafka_auth
from mesh.components.kafka_scram import (
    PROBE,
    AlterUserScramCredentialsRequest,
    CredentialChanges,
    changes,
    refusals,
    upsertion,
)
from mesh.placement import Placement
from mesh.runtime.paths import StateDir
from mesh.topology import KafkaNode, Topology


class CredentialsRefused(RuntimeError):
    pass


def scram_marker(state: StateDir, node: KafkaNode) -> Path:
    """The principals whose SCRAM credentials the node's log dir holds."""
    return state.data / f"{node.name}-scram-principals"


def held(marker: Path) -> set[str]:
    return set(marker.read_text().split()) if marker.exists() else set()


def record(marker: Path, names: tuple[str, ...]) -> None:
    marker.write_text("\n".join(names) + "\n")


async def _alter(
    host: str, port: int, sign_in: dict[str, Any], request: AlterUserScramCredentialsRequest
) -> dict[str, Any] | None:
    """The controller's answer to `request`, or None if it is not the active one. A controller
    that is not logs the request it refuses, salted credentials and all: so it is first asked
    to delete a credential nobody has, which changes nothing wherever it is answered, and is
    given the credentials only once that answer says it leads (in the same breath; a leader
    lost between the two would log them into its own owner-only log)."""
    conn = await create_conn(host, port, request_timeout_ms=5000, **sign_in)
    try:
        probe = await conn.send(AlterUserScramCredentialsRequest([], [PROBE]))
        if refusals(probe.to_object()):
            return None
        response = await conn.send(request)
        answer: dict[str, Any] = response.to_object()
        return answer
    finally:
        conn.close()


def _request(state: StateDir, needed: CredentialChanges) -> AlterUserScramCredentialsRequest:
    passwords = kafka_auth.passwords(state, needed.add)
    return AlterUserScramCredentialsRequest(
        [upsertion(name, passwords[name]) for name in needed.add], list(needed.remove)
    )


def ensure_credentials(
    topology: Topology,
    placement: Placement,
    state: StateDir,
    names: tuple[str, ...],
    markers: list[Path],
) -> str | None:
    """None once the data behind `markers` (each formatted node's) holds credentials for
    exactly `names`, asking the active controller for what is missing; else why not yet (no
    controller leads the quorum yet). CredentialsRefused if the controller refuses them."""
    needed = changes([held(marker) for marker in markers], names)
    if not needed:
        return None
    sign_in = kafka_auth.controller_options(
        kafka_auth.passwords(state, (kafka_auth.BROKER,))[kafka_auth.BROKER]
    )
    request = _request(state, needed)
    last = "no controller asked"
    for node in topology.kafka.nodes:
        host = placement.host(node.name)
        try:
            response = asyncio.run(_alter(host, node.controller_port, sign_in, request))
        except (OSError, TimeoutError, KafkaError) as exc:
            last = f"{node.name}'s controller: {exc.__class__.__name__}: {exc}"
            continue
        if response is None:
            last = f"{node.name} is not the active controller"
            continue
        refused = refusals(response)
        if refused:
            raise CredentialsRefused(
                f"Kafka's controllers refused the SCRAM credentials of {refused} for the data in "
                f"{state.data}/kafka-*, formatted without them. Starting the cluster afresh "
                "fixes it and loses its topics and messages: "
                f"SHOPMESH_STATE_DIR={state.root} mesh down && rm -r {state.data}/kafka-* "
                f"&& SHOPMESH_STATE_DIR={state.root} mesh up"
            )
        for marker in markers:
            record(marker, names)
        return None
    return (
        f"adding SCRAM credentials for {list(needed.add)} (removing {list(needed.remove)}): {last}"
    )
