"""A service's side of registration: its version in the mesh's document, then the agent's
registration retried until a deadline."""

import asyncio

import aiohttp
import pytest

from services.common import consul
from services.common.runner import with_version


def test_the_process_puts_its_version_first_in_the_meshs_meta():
    given = {"ID": "orders-1", "Meta": {"metrics_port": "9401"}, "Port": 7001}
    body = with_version(given, "1.2.3")
    assert body == {
        "ID": "orders-1",
        "Meta": {"version": "1.2.3", "metrics_port": "9401"},
        "Port": 7001,
    }
    assert list(body["Meta"]) == ["version", "metrics_port"]
    assert given["Meta"] == {"metrics_port": "9401"}


def test_the_process_version_replaces_any_the_document_had():
    body = with_version({"ID": "orders-1", "Meta": {"version": "0", "metrics_port": "9401"}}, "1")
    assert body["Meta"] == {"version": "1", "metrics_port": "9401"}


class FlakyAgent:
    """Fails `failures` times with `error`, then accepts the registration."""

    def __init__(self, failures, error):
        self.failures = failures
        self.error = error
        self.bodies = []

    async def register(self, body):
        self.bodies.append(body)
        if len(self.bodies) <= self.failures:
            raise self.error


def test_registration_retries_until_the_agent_answers(caplog):
    agent = FlakyAgent(2, aiohttp.ClientConnectionError("refused"))
    asyncio.run(consul.register_until(agent, {"ID": "orders-1"}, deadline_s=5))
    assert len(agent.bodies) == 3
    failures = [r for r in caplog.records if r.getMessage() == "consul registration failed"]
    assert len(failures) == 2


def test_registration_retries_server_errors():
    agent = FlakyAgent(1, consul.ConsulError(500, "leader not elected"))
    asyncio.run(consul.register_until(agent, {"ID": "orders-1"}, deadline_s=5))
    assert len(agent.bodies) == 2


def test_registration_refused_by_the_agent_is_not_retried():
    agent = FlakyAgent(5, consul.ConsulError(400, "Invalid check"))
    with pytest.raises(consul.ConsulError):
        asyncio.run(consul.register_until(agent, {"ID": "orders-1"}, deadline_s=5))
    assert len(agent.bodies) == 1


def test_registration_gives_up_at_the_deadline():
    agent = FlakyAgent(1000, aiohttp.ClientConnectionError("refused"))
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(consul.register_until(agent, {"ID": "orders-1"}, deadline_s=0.5))
    assert 2 <= len(agent.bodies) <= 5
