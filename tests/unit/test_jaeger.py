from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mesh.components import jaeger
from mesh.placement import JAEGER, NativePlacement
from mesh.runtime.jaeger import server_spec
from mesh.runtime.paths import StateDir
from mesh.runtime.supervisor import Mesh
from mesh.topology import load
from mesh.wiring import Wiring, instance_env, worker_env


def endpoints(config: dict) -> list[str]:
    """Every `endpoint` anywhere in the config: what Jaeger will listen on."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "endpoint":
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    return found


def test_every_listener_is_on_the_bind_host_at_a_topology_port() -> None:
    topology = load()
    config = jaeger.config(topology, NativePlacement.of(topology))
    ports = topology.jaeger.ports
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]
    prometheus = reader["pull"]["exporter"]["prometheus"]
    listening = [*endpoints(config), f"{prometheus['host']}:{prometheus['port']}"]
    assert sorted(listening) == sorted(f"{topology.bind_host}:{p}" for p in vars(ports).values())


def test_otlp_is_received_and_stored_in_memory_and_queried_from_there() -> None:
    topology = load()
    config = jaeger.config(topology, NativePlacement.of(topology))
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    (store,) = config["extensions"]["jaeger_storage"]["backends"].values()
    assert store == {"memory": {"max_traces": topology.jaeger.max_traces}}
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == jaeger.STORE
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] == jaeger.STORE
    assert set(config["service"]["extensions"]) == set(config["extensions"])


def test_the_process_owns_every_jaeger_port_and_services_export_to_its_otlp_grpc() -> None:
    topology = load()
    placement = NativePlacement.of(topology)
    spec = server_spec(topology, placement, StateDir(Path("/state")), {"jaeger": Path("/bin/j")})
    assert sorted(spec.ports) == sorted(vars(topology.jaeger.ports).values())
    assert spec.argv == ["/bin/j", "--config=/state/config/jaeger.yaml"]
    assert topology.otlp_endpoint() == f"http://127.0.0.1:{topology.jaeger.ports.otlp_grpc}"


class Untraced(NativePlacement):
    """One host without Jaeger."""

    def runs(self, component: str) -> bool:
        return component != JAEGER


def wiring(placement: NativePlacement) -> Wiring:
    return Wiring(
        placement=placement,
        database_password=lambda database: None,
        auth_seed_file=lambda: "/seed.json",
        consul_token_file=lambda service: f"/tokens/{service}",
        consul_ca_file="/ca.pem",
        kafka_password_file=lambda principal: f"/kafka/{principal}",
    )


def test_every_service_and_worker_gets_the_otlp_endpoint_only_where_jaeger_runs() -> None:
    topology = load()
    workers = topology.workers[0]
    traced = NativePlacement.of(topology)
    for placement, otlp in (
        (traced, traced.otlp_endpoint(topology)),
        (Untraced(topology.bind_host), None),
    ):
        envs = [instance_env(topology, wiring(placement), i) for i in topology.instances()]
        envs.append(worker_env(topology, wiring(placement), workers, workers.instances[0]))
        assert {env.get("OTEL_EXPORTER_OTLP_ENDPOINT") for env in envs} == {otlp}


def test_jaeger_starts_before_every_process_that_sends_spans(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    binaries = defaultdict(lambda: defaultdict(lambda: Path("/bin/true")))
    names = Mesh(load(), state, binaries).names()
    senders = [n for n in names if n.split("-")[0] in {"users", "auth", "orders", "payments",
               "notifications", "edge"}]  # fmt: skip
    assert senders
    assert all(names.index("jaeger") < names.index(n) for n in senders)
