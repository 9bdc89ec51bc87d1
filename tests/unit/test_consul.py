import asyncio

import aiohttp
import pytest

from services.common import consul
from services.common.config import ConfigError, ServiceSettings, Upstream


def settings(upstreams=(), metrics_port=9401):
    return ServiceSettings(
        service="orders",
        instance="orders-1",
        port=7001,
        consul_http_addr="http://127.0.0.1:8500",
        database_url="postgresql://orders:pw@127.0.0.1:15432/orders",
        sidecar_port=21001,
        upstreams=upstreams,
        metrics_port=metrics_port,
    )


def test_registration_body_describes_instance_check_and_sidecar():
    body = consul.registration_body(
        settings((Upstream("users", 9201), Upstream("payments", 9202))), version="1.2.3"
    )
    assert body == {
        "ID": "orders-1",
        "Name": "orders",
        "Address": "127.0.0.1",
        "Port": 7001,
        "Meta": {"version": "1.2.3", "metrics_port": "9401"},
        "Check": {
            "Name": "orders-1 /health",
            "HTTP": "http://127.0.0.1:9401/health",
            "Method": "GET",
            "Interval": "1s",
            "Timeout": "1s",
            "FailuresBeforeCritical": 3,
            "DeregisterCriticalServiceAfter": "5m",
        },
        "Connect": {
            "SidecarService": {
                "Port": 21001,
                "Address": "127.0.0.1",
                "Proxy": {
                    "LocalServiceAddress": "127.0.0.1",
                    "LocalServicePort": 7001,
                    "Upstreams": [
                        {
                            "DestinationName": "users",
                            "LocalBindAddress": "127.0.0.1",
                            "LocalBindPort": 9201,
                        },
                        {
                            "DestinationName": "payments",
                            "LocalBindAddress": "127.0.0.1",
                            "LocalBindPort": 9202,
                        },
                    ],
                },
                "Checks": [
                    {
                        "Name": "Connect Sidecar Listening",
                        "TCP": "127.0.0.1:21001",
                        "Interval": "1s",
                        "Timeout": "1s",
                        "FailuresBeforeCritical": 3,
                    },
                    {"Name": "Connect Sidecar Aliasing orders-1", "AliasService": "orders-1"},
                ],
            }
        },
    }


def test_registration_without_upstreams_has_an_empty_list():
    body = consul.registration_body(settings(), version="1")
    assert body["Connect"]["SidecarService"]["Proxy"]["Upstreams"] == []


def test_an_instance_without_an_admin_port_cannot_be_registered():
    with pytest.raises(ConfigError, match="SHOPMESH_METRICS_PORT"):
        consul.registration_body(settings(metrics_port=None), version="1")


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


def test_a_sidecar_metrics_port_becomes_envoys_prometheus_listener():
    plain = settings()
    with_port = ServiceSettings(**{**vars(plain), "sidecar_metrics_port": 9501})
    proxy = consul.registration_body(with_port, version="1")["Connect"]["SidecarService"]["Proxy"]
    assert proxy["Config"]["envoy_prometheus_bind_addr"] == "127.0.0.1:9501"
    assert (
        "Config"
        not in consul.registration_body(plain, version="1")["Connect"]["SidecarService"]["Proxy"]
    )
