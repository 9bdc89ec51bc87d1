"""Every Consul registration of the mesh (mesh/registration.py): each service instance's and
the edge's, with its check, Meta and Connect sidecar, and how an instance gets its own."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from mesh.envoy_tracing import OTLP_CLUSTER
from mesh.placement import JAEGER, ComposePlacement, NativePlacement, Placement
from mesh.registration import edge_registration, instance_registration
from mesh.runtime.tls import new_ca
from mesh.topology import Instance, Service, Sidecar, Topology, Upstream, load
from mesh.wiring import Wiring, instance_env
from services.common.config import ServiceSettings
from services.common.runner import registered_until_stopped, with_version

ORDERS_1 = Instance(
    id="orders-1",
    service="orders",
    port=7001,
    sidecar=Sidecar(port=21001, metrics_port=9501),
    metrics_port=9401,
)


def orders_only(upstreams: tuple[Upstream, ...] = ()) -> Topology:
    orders = Service(
        name="orders",
        module="services.orders",
        protocol="http",
        database="orders",
        upstreams=upstreams,
        instances=(ORDERS_1,),
    )
    return replace(load(), services=(orders,))


class Untraced(NativePlacement):
    """One host without Jaeger: nothing traces."""

    def runs(self, component: str) -> bool:
        return component != JAEGER


ONE_HOST = Untraced("127.0.0.1")


def orders_registration(
    upstreams: tuple[Upstream, ...] = (), *, placement: Placement = ONE_HOST
) -> dict:
    return instance_registration(orders_only(upstreams), placement, ORDERS_1)


def test_an_instance_registration_describes_instance_check_and_sidecar() -> None:
    body = orders_registration((Upstream("users", 9201), Upstream("payments", 9202)))
    assert body == {
        "ID": "orders-1",
        "Name": "orders",
        "Address": "127.0.0.1",
        "Port": 7001,
        # No version: the process puts in the version of the code it runs.
        "Meta": {"metrics_port": "9401"},
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
                    "Config": {"envoy_prometheus_bind_addr": "127.0.0.1:9501"},
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


def test_registration_without_upstreams_has_an_empty_list() -> None:
    assert orders_registration()["Connect"]["SidecarService"]["Proxy"]["Upstreams"] == []


def test_in_a_container_all_is_at_its_address_but_the_upstream_listeners() -> None:
    compose = ComposePlacement.of(orders_only())
    address = compose.address(ORDERS_1.id)
    assert address.startswith("172.28.0.")
    body = orders_registration((Upstream("users", 9201),), placement=compose)
    sidecar = body["Connect"]["SidecarService"]
    assert body["Address"] == sidecar["Address"] == address
    assert body["Check"]["HTTP"] == f"http://{address}:9401/health"
    assert sidecar["Proxy"]["LocalServiceAddress"] == address
    assert sidecar["Proxy"]["Config"]["envoy_prometheus_bind_addr"] == f"{address}:9501"
    assert sidecar["Checks"][0]["TCP"] == f"{address}:21001"
    # The sidecar shares the instance's network namespace: its upstream listeners are loopback.
    assert sidecar["Proxy"]["Upstreams"][0]["LocalBindAddress"] == "127.0.0.1"


def test_where_jaeger_runs_the_sidecar_traces_every_listener_as_service_sidecar() -> None:
    body = orders_registration(placement=NativePlacement("127.0.0.1"))
    config = body["Connect"]["SidecarService"]["Proxy"]["Config"]
    (cluster,) = json.loads(config["envoy_extra_static_clusters_json"])["load_assignment"][
        "endpoints"
    ][0]["lb_endpoints"]
    assert cluster["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": load().jaeger.ports.otlp_grpc,
    }
    bootstrap = json.loads(config["envoy_tracing_json"])["http"]
    listener = json.loads(config["envoy_listener_tracing_json"])
    assert listener["@type"].endswith("HttpConnectionManager.Tracing")
    assert listener["random_sampling"] == {"value": 100.0}
    for provider in (bootstrap, listener["provider"]):
        assert provider["name"] == "envoy.tracers.opentelemetry"
        typed = provider["typed_config"]
        assert typed["service_name"] == "orders-sidecar"
        assert typed["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER
    # Helper keys of the same Proxy.Config stay as they were.
    assert config["envoy_prometheus_bind_addr"] == "127.0.0.1:9501"


def test_without_jaeger_the_sidecar_has_no_tracing() -> None:
    config = orders_registration()["Connect"]["SidecarService"]["Proxy"]["Config"]
    assert not {k for k in config if "tracing" in k or "static_clusters" in k}


def test_every_instance_of_the_topology_registers_its_own_ports_and_upstreams() -> None:
    topology = load()
    for instance in topology.instances():
        body = instance_registration(topology, Untraced(topology.bind_host), instance)
        sidecar = body["Connect"]["SidecarService"]
        upstreams = topology.service(instance.service).upstreams
        assert (body["ID"], body["Name"], body["Port"]) == (
            instance.id,
            instance.service,
            instance.port,
        )
        assert body["Meta"] == {"metrics_port": str(instance.metrics_port)}
        assert sidecar["Port"] == instance.sidecar.port
        registered = [
            (u["DestinationName"], u["LocalBindPort"]) for u in sidecar["Proxy"]["Upstreams"]
        ]
        assert registered == [(u.service, u.local_bind_port) for u in upstreams]


def test_each_instance_registers_the_document_its_environment_hands_it_with_its_version(
    tmp_path: Path,
) -> None:
    topology = load()
    placement = NativePlacement.of(topology)
    (tmp_path / "token").write_text("a-token")
    (tmp_path / "ca.pem").write_bytes(new_ca("a test consul CA")[1].public_bytes(Encoding.PEM))
    wiring = Wiring(
        placement=placement,
        database_password=lambda database: None,
        auth_seed_file=lambda: "/seed.json",
        consul_token_file=lambda service: str(tmp_path / "token"),
        consul_ca_file=str(tmp_path / "ca.pem"),
        kafka_password_file=lambda principal: str(tmp_path / "kafka"),
    )
    for instance in topology.instances():
        env = instance_env(topology, wiring, instance)
        expected = instance_registration(topology, placement, instance)
        database = topology.service(instance.service).database is not None
        settings = ServiceSettings.from_env(env, database=database)
        assert settings.registration == expected
        body = with_version(settings.registration, "1.2.3")
        assert body == {**expected, "Meta": {"version": "1.2.3", **expected["Meta"]}}
    # What served only the registration is no longer in the environment.
    assert not {name for name in env if name.startswith("SHOPMESH_SIDECAR")}


@pytest.mark.parametrize("index", [0, 1])
def test_each_edge_is_registered_with_its_ready_check_and_its_sidecar_upstreams(index: int) -> None:
    topology = load()
    edge = topology.edge.instances[index]
    host = topology.bind_host
    reg = edge_registration(topology, NativePlacement.of(topology), edge)
    sidecar = reg["Connect"]["SidecarService"]
    assert {k: v for k, v in reg.items() if k != "Connect"} == {
        "ID": edge.id,
        "Name": "edge",
        "Address": host,
        "Port": edge.http_port,
        "Check": {
            "Name": "edge ready",
            "HTTP": f"http://{host}:{edge.metrics_port}/ready",
            "Interval": "1s",
            "Timeout": "1s",
            "FailuresBeforeCritical": 3,
            "DeregisterCriticalServiceAfter": "5m",
        },
    }
    assert (sidecar["Port"], sidecar["Address"]) == (edge.sidecar.port, host)
    assert sidecar["Proxy"]["LocalServicePort"] == edge.http_port
    assert {(u["DestinationName"], u["LocalBindPort"]) for u in sidecar["Proxy"]["Upstreams"]} == {
        (u.service, u.local_bind_port) for u in edge.upstreams
    }
    assert sidecar["Proxy"]["Config"]["envoy_prometheus_bind_addr"] == (
        f"{host}:{edge.sidecar.metrics_port}"
    )


def test_the_edge_sidecar_traces_as_edge_sidecar() -> None:
    topology = load()
    reg = edge_registration(topology, NativePlacement.of(topology), topology.edge.instances[1])
    config = reg["Connect"]["SidecarService"]["Proxy"]["Config"]
    tracing = json.loads(config["envoy_listener_tracing_json"])
    assert tracing["provider"]["typed_config"]["service_name"] == "edge-sidecar"


def test_an_instance_the_platform_registers_waits_for_its_stop_without_asking_consul(
    tmp_path: Path,
) -> None:
    # Nothing listens on the agent's address: a registration or deregistration would fail.
    (tmp_path / "token").write_text("a-token")
    (tmp_path / "ca.pem").write_bytes(new_ca("a test consul CA")[1].public_bytes(Encoding.PEM))
    settings = ServiceSettings.from_env(
        {
            "SHOPMESH_SERVICE": "orders",
            "SHOPMESH_INSTANCE": "orders-5d9c7b-x2x7q",
            "SHOPMESH_PORT": "7001",
            "SHOPMESH_DATABASE_URL": "postgresql://orders@postgres:5432/orders",
            "SHOPMESH_CONSUL_HTTP_ADDR": "https://127.0.0.1:1",
            "SHOPMESH_CONSUL_TOKEN_FILE": str(tmp_path / "token"),
            "SHOPMESH_CONSUL_CA_FILE": str(tmp_path / "ca.pem"),
            "SHOPMESH_CONSUL_REGISTER": "false",
        }
    )
    steps: list[str] = []

    async def stopped() -> int:
        stop = asyncio.Event()

        async def before_deregister() -> None:
            steps.append("before deregister")

        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await registered_until_stopped(
            settings, stop, register_deadline_s=0.1, before_deregister=before_deregister
        )

    assert asyncio.run(asyncio.wait_for(stopped(), timeout=5)) == 0
    assert steps == ["before deregister"]
