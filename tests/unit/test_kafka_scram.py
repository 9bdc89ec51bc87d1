"""SCRAM credentials added to a cluster whose data lacks them (no broker is started: the
controllers' answers are faked at the connection)."""

from __future__ import annotations

import asyncio
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from mesh.components import kafka_auth
from mesh.components.kafka_scram import (
    PROBE,
    RESOURCE_NOT_FOUND,
    SCRAM_SHA_512,
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsRequest_v0,
    changes,
    salted_password,
    upsertion,
)
from mesh.placement import NativePlacement
from mesh.runtime import kafka, kafka_credentials, process
from mesh.runtime.paths import StateDir
from mesh.topology import load

NAMES = ("broker", "admin", "orders")


def test_the_salted_password_is_the_one_kafkas_scram_formatter_computes() -> None:
    # ScramFormatter(SCRAM_SHA_512).hi("pässword", "saltsalt", 4096) of Kafka 3.9.2.
    kafkas = (
        "b808bd71aab63bcd0cff2c35f04cba0b83f40d61b9bc105b22ed74e85f8585964d39e22748394d5c"
        "b65451dafa6c62fc286d28a31c5305d0629a3f0fd6db7a75"
    )
    assert salted_password("pässword", b"saltsalt", 4096).hex() == kafkas


def test_the_request_carries_salted_credentials_and_no_password() -> None:
    request = AlterUserScramCredentialsRequest([upsertion("orders", "s3cret-pw")], ["old"])
    struct = request.prepare({51: (0, 0)})
    encoded = struct.encode()
    decoded = AlterUserScramCredentialsRequest_v0.decode(BytesIO(encoded)).to_object()

    assert b"s3cret-pw" not in encoded
    assert decoded["deletions"] == [{"name": "old", "mechanism": SCRAM_SHA_512, "tags": {}}]
    (upserted,) = decoded["upsertions"]
    assert (upserted["name"], upserted["mechanism"]) == ("orders", SCRAM_SHA_512)
    assert upserted["iterations"] >= 4096
    salted = salted_password("s3cret-pw", upserted["salt"], upserted["iterations"])
    assert upserted["salted_password"] == salted


def test_a_fresh_salt_for_every_credential() -> None:
    assert upsertion("a", "pw").salt != upsertion("a", "pw").salt


def test_data_formatted_before_sasl_needs_every_principal_and_complete_data_nothing() -> None:
    assert changes([set(), set(), set()], NAMES).add == NAMES
    assert not changes([set(NAMES)] * 3, NAMES)


def test_a_principal_added_or_dropped_is_added_or_removed_and_one_lagging_node_counts() -> None:
    needed = changes([{"broker", "admin", "gone"}, {"broker", "admin", "orders", "gone"}], NAMES)
    assert needed.add == ("orders",)
    assert needed.remove == ("gone",)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Three formatted nodes' markers, pre-SASL (none), and a fake quorum led by the second
    node, which records what it is asked."""
    topology = load()
    state = StateDir(tmp_path / "state")
    state.ensure()
    leader = topology.kafka.nodes[1]
    asked: list[tuple[int, Any]] = []

    async def alter(_host: str, port: int, sign_in: dict[str, Any], request: Any) -> Any:
        struct = request.prepare({51: (0, 0)}).to_object()
        asked.append((port, struct))
        assert sign_in["sasl_mechanism"] == "PLAIN"
        assert sign_in["sasl_plain_username"] == kafka_auth.BROKER
        users = [u["name"] for u in struct["upsertions"]]
        users += [d["name"] for d in struct["deletions"]]
        if port != leader.controller_port:
            return None
        return {"results": [{"user": u, "error_code": 0, "error_message": None} for u in users]}

    monkeypatch.setattr(kafka_credentials, "_alter", alter)
    markers = [kafka_credentials.scram_marker(state, n) for n in topology.kafka.nodes]
    return {"topology": topology, "state": state, "markers": markers, "asked": asked}


def ensure(cluster: dict[str, Any]) -> str | None:
    topology = cluster["topology"]
    return kafka_credentials.ensure_credentials(
        topology, NativePlacement.of(topology), cluster["state"], NAMES, cluster["markers"]
    )


def test_the_active_controller_is_given_the_missing_credentials_once(
    cluster: dict[str, Any],
) -> None:
    assert ensure(cluster) is None

    leader = cluster["topology"].kafka.nodes[1]
    ports = [port for port, _ in cluster["asked"]]
    assert ports[-1] == leader.controller_port
    added = [u["name"] for u in cluster["asked"][-1][1]["upsertions"]]
    assert added == list(NAMES)
    assert [m.read_text().split() for m in cluster["markers"]] == [list(NAMES)] * 3

    cluster["asked"].clear()
    assert ensure(cluster) is None
    assert cluster["asked"] == [], "a cluster that has them all is asked nothing"


def test_without_a_leading_controller_it_says_why_and_records_nothing(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_quorum(*_args: Any) -> Any:
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(kafka_credentials, "_alter", no_quorum)

    reason = ensure(cluster)

    assert reason is not None and "adding SCRAM credentials" in reason
    assert not any(m.exists() for m in cluster["markers"])


def test_a_refusal_names_the_data_and_how_to_start_afresh(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_args: Any) -> Any:
        results = [{"user": "orders", "error_code": 35, "error_message": "unsupported"}]
        return {"results": results}

    monkeypatch.setattr(kafka_credentials, "_alter", refuse)

    with pytest.raises(kafka_credentials.CredentialsRefused) as refused:
        ensure(cluster)
    assert str(cluster["state"].data) in str(refused.value)
    assert "rm -r" in str(refused.value)


def test_removing_a_credential_that_is_gone_already_is_done(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for marker in cluster["markers"]:
        kafka_credentials.record(marker, (*NAMES, "gone"))

    async def gone(*_args: Any) -> Any:
        return {
            "results": [{"user": "gone", "error_code": RESOURCE_NOT_FOUND, "error_message": ""}]
        }

    monkeypatch.setattr(kafka_credentials, "_alter", gone)

    assert ensure(cluster) is None
    assert [m.read_text().split() for m in cluster["markers"]] == [list(NAMES)] * 3


def test_node_ready_waits_for_the_credentials_before_it_asks_the_brokers(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology, state = cluster["topology"], cluster["state"]
    monkeypatch.setattr(kafka, "_port_open", lambda _host, _port: True)
    monkeypatch.setattr(kafka.process, "running", lambda _state, _name: True)
    monkeypatch.setattr(kafka, "formatted", lambda _state, _node: True)
    monkeypatch.setattr(kafka, "principal_names", lambda: NAMES)
    every = {n.id for n in topology.kafka.nodes}
    monkeypatch.setattr(kafka, "brokers_seen_by", lambda _placement, _state, _node: every)

    async def no_quorum(*_args: Any) -> Any:
        raise ConnectionRefusedError("refused")

    with monkeypatch.context() as starting:
        starting.setattr(kafka_credentials, "_alter", no_quorum)
        reason = kafka.node_ready(
            topology, NativePlacement.of(topology), state, topology.kafka.nodes[-1]
        )
    assert reason is not None and "SCRAM" in reason

    assert (
        kafka.node_ready(topology, NativePlacement.of(topology), state, topology.kafka.nodes[-1])
        is None
    )


def test_node_ready_ends_the_start_when_the_controllers_refuse_the_credentials(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology, state = cluster["topology"], cluster["state"]
    monkeypatch.setattr(kafka, "_port_open", lambda _host, _port: True)
    monkeypatch.setattr(kafka.process, "running", lambda _state, _name: True)
    monkeypatch.setattr(kafka, "formatted", lambda _state, _node: True)
    monkeypatch.setattr(kafka, "principal_names", lambda: NAMES)

    async def refuse(*_args: Any) -> Any:
        return {"results": [{"user": "orders", "error_code": 35, "error_message": "unsupported"}]}

    monkeypatch.setattr(kafka_credentials, "_alter", refuse)
    last = topology.kafka.nodes[-1]

    with pytest.raises(process.ProcessFailed, match=str(state.data)):
        kafka.node_ready(topology, NativePlacement.of(topology), state, last)


class FakeController:
    """A controller connection: active or not, it records what it is sent."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.sent: list[dict[str, Any]] = []

    async def send(self, request: AlterUserScramCredentialsRequest) -> Any:
        """The request as the wire carries it, and the answer as it would come back."""
        struct = request.prepare({51: (0, 0)})
        sent = type(struct).decode(BytesIO(struct.encode())).to_object()
        self.sent.append(sent)
        names = [d["name"] for d in sent["deletions"]] + [u["name"] for u in sent["upsertions"]]
        code = (RESOURCE_NOT_FOUND if names == [PROBE] else 0) if self.active else 41
        response = struct.RESPONSE_TYPE(0, [(n, code, None, {}) for n in names], {})
        return struct.RESPONSE_TYPE.decode(BytesIO(response.encode()))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("active", [True, False])
def test_credentials_go_only_to_a_controller_that_answered_the_probe_as_the_active_one(
    monkeypatch: pytest.MonkeyPatch, active: bool
) -> None:
    """A controller that is not active logs the request it refuses: the salted credentials
    must never be sent to one."""
    controller = FakeController(active)

    async def connect(*_args: Any, **_kwargs: Any) -> FakeController:
        return controller

    monkeypatch.setattr(kafka_credentials, "create_conn", connect)
    request = AlterUserScramCredentialsRequest([upsertion("orders", "pw")], [])

    answer = asyncio.run(kafka_credentials._alter("127.0.0.1", 1, {}, request))

    probe = {"deletions": [{"name": PROBE, "mechanism": SCRAM_SHA_512, "tags": {}}]}
    assert controller.sent[0] == probe | {"upsertions": [], "tags": {}}
    if active:
        assert answer is not None and answer["results"][0]["user"] == "orders"
        assert [u["name"] for u in controller.sent[1]["upsertions"]] == ["orders"]
    else:
        assert answer is None
        assert len(controller.sent) == 1


def test_no_principal_may_be_named_as_the_probe() -> None:
    with pytest.raises(ValueError):
        kafka_auth.principals(("orders", PROBE))
