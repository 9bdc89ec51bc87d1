"""compose.yaml cannot run here (no container engine), so it is checked statically: generated
from the topology, valid against the compose-spec schema, every topology name, port and
environment value in it, every file it mounts or builds from present."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mesh.components import kafka, kafka_auth, postgres, prometheus, ratelimit
from mesh.components.consul_acl import PROMETHEUS
from mesh.components.edge import RATELIMIT_CLUSTER, EdgeFiles, envoy_config
from mesh.components.edge_metrics import ADMIN_CLUSTER
from mesh.compose import document, files, volume
from mesh.compose.document import SIDECAR_ADMIN_PORT
from mesh.compose.volume import EDGE_ADMIN_SOCKET
from mesh.envoy_tracing import OTLP_CLUSTER
from mesh.placement import (
    JAEGER,
    LOOPBACK,
    RATELIMIT,
    WATCHDOG,
    ComposePlacement,
    NativePlacement,
)
from mesh.registration import edge_registration, instance_registration
from mesh.runtime import protos, provision
from mesh.runtime.consul_acl import token_file
from mesh.runtime.paths import REPO_ROOT, StateDir, cache_dir
from mesh.runtime.prometheus import native_rule_files, sd_dir
from mesh.runtime.provision import COMPOSE_SCHEMA
from mesh.runtime.ratelimit import service_spec
from mesh.runtime.supervisor import native_wiring, service_env
from mesh.runtime.tls import consul_ca
from mesh.topology import Topology, load
from mesh.wiring import WEB, worker_env

# Values that differ between the native runtime and compose by design (the placements').
STATE_FILES = {"SHOPMESH_CONSUL_TOKEN_FILE", "SHOPMESH_CONSUL_CA_FILE"}
HOST_VARIABLES = {"SHOPMESH_BIND_HOST", "SHOPMESH_REGISTRATION", "SHOPMESH_CONSUL_HTTP_ADDR"}
HOST_VARIABLES |= {"SHOPMESH_KAFKA_BOOTSTRAP", "SHOPMESH_DATABASE_URL", "SHOPMESH_AUTH_SEED_FILE"}
HOST_VARIABLES |= {"OTEL_EXPORTER_OTLP_ENDPOINT", "SHOPMESH_WEB_JAEGER_URL"}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(document.COMPOSE_FILE.read_text())


def one_shots(doc: dict[str, Any]) -> set[str]:
    return {name for name, svc in doc["services"].items() if svc.get("restart") == "no"}


def test_committed_compose_files_are_the_ones_the_topology_generates(topology: Topology) -> None:
    assert files.stale(topology) == [], "run `mesh compose` and commit the result"


def test_compose_yaml_is_valid_against_the_compose_spec_schema(doc: dict[str, Any]) -> None:
    schema_file = COMPOSE_SCHEMA.binaries(cache_dir())["compose-spec.json"]
    assert schema_file.exists(), f"{schema_file} is missing: run `mesh install`"
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft7Validator(schema).validate(doc)


def test_the_schema_check_rejects_a_broken_compose_file(doc: dict[str, Any]) -> None:
    schema_file = COMPOSE_SCHEMA.binaries(cache_dir())["compose-spec.json"]
    broken = {**doc, "services": {"consul": {**doc["services"]["consul"], "mem_limit": []}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(schema_file.read_text())).validate(broken)


def test_every_service_instance_has_its_container_and_a_sidecar_in_its_namespace(
    topology: Topology, doc: dict[str, Any]
) -> None:
    services = doc["services"]
    placement = ComposePlacement.of(topology)
    for instance in topology.instances():
        app = services[instance.id]
        env = app["environment"]
        assert env["SHOPMESH_PORT"] == str(instance.port)
        assert env["SHOPMESH_METRICS_PORT"] == str(instance.metrics_port)
        # Registered at the container's address (its sidecar's too), tracing to Jaeger's.
        assert json.loads(env["SHOPMESH_REGISTRATION"]) == instance_registration(
            topology, placement, instance
        )
        assert env["SHOPMESH_BIND_HOST"] == placement.address(instance.id)
        upstreams = topology.service(instance.service).upstreams
        assert json.loads(env["SHOPMESH_UPSTREAMS"]) == [
            {"name": u.service, "local_bind_port": u.local_bind_port} for u in upstreams
        ]
        assert app["command"] == ["python", "-m", topology.service(instance.service).module]
        sidecar = services[f"{instance.id}-sidecar"]
        assert sidecar["network_mode"] == f"service:{instance.id}"
        command = sidecar["command"]
        assert command[command.index("-sidecar-for") + 1] == instance.id
        assert command[command.index("-admin-bind") + 1] == f"{LOOPBACK}:{SIDECAR_ADMIN_PORT}"
        assert "-ignore-envoy-compatibility" in command


def _same_secret_file(native: dict[str, str], container: dict[str, str], state: StateDir) -> None:
    """The Kafka password file: the same one, each in its own state dir."""
    key = "SHOPMESH_KAFKA_PASSWORD_FILE"
    if "SHOPMESH_KAFKA_USERNAME" not in native:  # a service without Kafka (web)
        assert key not in container
        return
    principal = native["SHOPMESH_KAFKA_USERNAME"]
    assert native.pop(key) == str(kafka_auth.password_file(state, principal))
    assert container.pop(key) == str(kafka_auth.password_file(volume.STATE, principal))


def test_the_environment_is_the_native_one_but_for_the_hosts(
    topology: Topology, doc: dict[str, Any], tmp_path: Path
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    placement = ComposePlacement.of(topology)
    for instance in topology.instances():
        native = service_env(topology, state, instance)
        container = dict(doc["services"][instance.id]["environment"])
        if "SHOPMESH_DATABASE_URL" in native:
            assert container.pop("PGPASSFILE") == str(volume.PGPASS)
        if instance.service == WEB:  # compose's Jaeger has a UI, the native one none
            ui = container.pop(document.JAEGER_UI_URL)
            assert ui == f"http://{placement.public()}:{topology.jaeger.ports.ui}"
            assert document.JAEGER_UI_URL not in native
        _same_secret_file(native, container, state)
        assert container.keys() == native.keys()
        for key in native.keys() - HOST_VARIABLES - STATE_FILES:
            assert container[key] == native[key], key
        for key in STATE_FILES:  # the same file of the state dir, where each has it
            in_volume = Path(container[key]).relative_to(volume.STATE.root)
            assert in_volume == Path(native[key]).relative_to(state.root), key
    wiring = native_wiring(topology, state)
    for workers in topology.workers:
        for instance in workers.instances:
            native = worker_env(topology, wiring, workers, instance)
            container = dict(doc["services"][instance]["environment"])
            assert container.pop("PGPASSFILE") == str(volume.PGPASS)
            _same_secret_file(native, container, state)
            assert container.keys() == native.keys()
            for key in native.keys() - HOST_VARIABLES:
                assert container[key] == native[key], key


def test_the_sidecars_admin_port_in_compose_is_no_port_of_the_topology(topology: Topology) -> None:
    # It is bound on the loopback of each instance's (and edge's) network namespace.
    assert SIDECAR_ADMIN_PORT not in topology.all_ports().values()


def test_workers_run_as_in_the_topology_without_sidecar(
    topology: Topology, doc: dict[str, Any]
) -> None:
    services = doc["services"]
    for workers in topology.workers:
        for instance in workers.instances:
            worker = services[instance]
            assert worker["command"] == ["python", "-m", workers.module]
            assert worker["environment"]["SHOPMESH_INSTANCE"] == instance
            assert worker["environment"]["SHOPMESH_SERVICE"] == workers.name
            assert f"{instance}-sidecar" not in services
            assert workers.group in worker["healthcheck"]["test"]


def test_kafka_nodes_form_the_topology_quorum(topology: Topology, doc: dict[str, Any]) -> None:
    placement = ComposePlacement.of(topology)
    voters = ",".join(f"{n.id}@{n.name}:{n.controller_port}" for n in topology.kafka.nodes)
    for node in topology.kafka.nodes:
        service = doc["services"][node.name]
        start = service["command"][0]
        # Its settings are the native ones, written by init into the state volume.
        assert f"kafka-server-start.sh {volume.kafka_node_properties(node)}" in start
        assert f"kafka-storage.sh @{volume.kafka_format_arguments(node)}" in start
        props = kafka.server_properties(topology, placement, node, volume.KAFKA_DATA)
        assert props["controller.quorum.voters"] == voters
        assert props["advertised.listeners"] == f"CLIENT://{node.name}:{node.port}"
        assert props["allow.everyone.if.no.acl.found"] == "false"
        assert f"-Xmx{topology.kafka.heap}" in service["environment"]["KAFKA_HEAP_OPTS"]
        assert str(volume.KAFKA_ADMIN_PROPERTIES) in " ".join(service["healthcheck"]["test"])
    topics = " ".join(doc["services"]["kafka-topics"]["command"])
    assert f"--command-config {volume.KAFKA_ADMIN_PROPERTIES}" in topics
    for topic in kafka.load_topics():
        assert f"--topic {topic.name} --partitions {topic.partitions} " in topics
    acls = doc["services"]["kafka-acls"]
    assert acls["command"] == ["python", "-m", "mesh.compose", "kafka-acls"]
    for instance in topology.instances():
        assert "kafka-acls" in doc["services"][instance.id]["depends_on"]


def test_postgres_runs_with_the_native_nodes_cache_and_connections(doc: dict[str, Any]) -> None:
    command = doc["services"]["postgres"]["command"]
    assert command[-4:] == postgres.server_flags()
    assert f"shared_buffers={postgres.SHARED_BUFFERS}" in command


def test_no_kafka_password_is_in_the_compose_file(topology: Topology) -> None:
    text = "".join(files.generated(topology).values())
    assert "jaas" not in text.lower()
    assert "password=" not in text


def test_every_topology_port_is_in_the_compose_files(topology: Topology) -> None:
    text = "".join(files.generated(topology).values())
    # The edge sidecars' own ports are in their Consul registrations, made at start by
    # `bootstrap` from the same topology (mesh/runtime/edge.py).
    registered = {
        owner
        for e in topology.edge.instances
        for owner in (
            f"{e.id}-sidecar",
            *(f"{e.id} -> {u.service} upstream" for u in e.upstreams),
        )
    }
    # The edges' own listeners are in their Envoy configs and the balancer's, which `bootstrap`
    # writes from the same topology; only the balancer's ports are published.
    registered |= {
        f"{e.id} {listener}" for e in topology.edge.instances for listener in ("http", "https")
    }
    # Compose restarts containers with its restart policies; the watchdog is native only.
    registered.add("watchdog metrics")
    # The Kafka nodes' controller listeners are in their server.properties, which init writes
    # into the state volume from the same topology (it holds the broker's password).
    registered |= {f"{n.name} controller" for n in topology.kafka.nodes}
    # Compose runs one Postgres, on the first node's port, without Patroni (docs/runtime.md).
    registered |= {f"{pg.name} patroni" for pg in topology.postgres_nodes}
    registered |= {pg.name for pg in topology.postgres_nodes[1:]}
    missing = {
        owner: port
        for owner, port in topology.all_ports().items()
        if owner not in registered and not re.search(rf"(?<![0-9]){port}(?![0-9])", text)
    }
    assert missing == {}


def test_the_balancer_publishes_the_edge_tcp_ports_and_the_first_edge_the_udp_one_on_loopback(
    topology: Topology, doc: dict[str, Any]
) -> None:
    e, host = topology.edge, topology.bind_host
    assert set(doc["services"]["balancer"]["ports"]) == {
        f"{host}:{e.http_port}:{e.http_port}/tcp",
        f"{host}:{e.https_port}:{e.https_port}/tcp",
    }
    first, *others = e.instances
    assert doc["services"][first.id]["ports"] == [f"{host}:{e.https_port}:{e.https_port}/udp"]
    assert others and all("ports" not in doc["services"][other.id] for other in others)
    published = [p for svc in doc["services"].values() for p in svc.get("ports", [])]
    assert all(p.startswith(f"{host}:") for p in published)


def test_every_file_compose_mounts_or_builds_from_exists(doc: dict[str, Any]) -> None:
    checked = 0
    for name, svc in doc["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
                checked += 1
            else:
                assert source in doc["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in svc:
            context = REPO_ROOT / svc["build"]["context"]
            assert (context / svc["build"]["dockerfile"]).is_file(), name
            checked += 1
    assert checked > 0
    assert (REPO_ROOT / ".dockerignore").is_file()


def test_dockerignore_lets_through_everything_the_service_image_copies() -> None:
    # .dockerignore starts from "*" and lets named paths back in with "!path".
    let_through = {
        line[1:]
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = [
        line.split()[1]
        for line in (REPO_ROOT / "docker" / "service.Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and not line.startswith("COPY --from")
    ]
    assert copied
    assert [source for source in copied if source not in let_through] == []


def test_every_image_is_pinned(doc: dict[str, Any]) -> None:
    for name, svc in doc["services"].items():
        image = svc["image"]
        assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+", image), f"{name}: {image}"
        assert not image.endswith(":latest"), name
        for arg, value in svc.get("build", {}).get("args", {}).items():
            if arg.endswith("_IMAGE"):
                assert value in document.IMAGES.values(), f"{name}: {arg}={value}"
    for dockerfile in (REPO_ROOT / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                assert line.split()[1].startswith("${"), f"{dockerfile.name}: {line}"


def test_long_running_containers_have_limits_restarts_and_healthchecks(
    doc: dict[str, Any],
) -> None:
    long_running = doc["services"].keys() - one_shots(doc)
    edges = {e.id for e in load().edge.instances}
    assert {"consul", "postgres", "balancer", "prometheus", "grafana", *edges} <= long_running
    for name in long_running:
        svc = doc["services"][name]
        assert svc["restart"] == "unless-stopped", name
        assert re.fullmatch(r"[0-9]+[mg]", svc["mem_limit"]), name
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_no_secret_is_in_compose_yaml(doc: dict[str, Any]) -> None:
    for name, svc in doc["services"].items():
        for key, value in svc.get("environment", {}).items():
            if "PASSWORD" in key and not key.endswith("_FILE"):
                pytest.fail(f"{name} has {key} in its environment")
            if key == "SHOPMESH_DATABASE_URL":
                assert ":" not in value.split("@")[0].removeprefix("postgresql://"), name


def test_prometheus_finds_the_services_through_consul(topology: Topology) -> None:
    config = yaml.safe_load(document.PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["services"]["consul_sd_configs"]
    token = {"type": "Bearer", "credentials_file": str(token_file(volume.STATE, PROMETHEUS))}
    https = {"scheme": "https", "tls_config": {"ca_file": str(consul_ca(volume.STATE))}}
    assert sd == [
        {
            "server": f"consul:{topology.consul_ports.https}",
            **https,
            "refresh_interval": "5s",
            "authorization": token,
        }
    ]
    assert jobs["consul"]["authorization"] == token, "Consul's own metrics need agent:read"
    assert {key: jobs["consul"][key] for key in https} == https
    targets = [t for group in jobs["envoy"]["static_configs"] for t in group["targets"]]
    assert len(targets) == len(topology.instances()) + len(topology.edge.instances)


def test_prometheus_scrapes_the_jobs_and_labels_it_scrapes_natively(
    topology: Topology, tmp_path: Path
) -> None:
    def labels(config: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
        return {
            job["job_name"]: [group["labels"] for group in job.get("static_configs", [])]
            for job in config["scrape_configs"]
        }

    native = prometheus.config(
        topology,
        NativePlacement.of(topology),
        rule_files=native_rule_files(),
        discovery=prometheus.FileDiscovery(sd_dir(StateDir(tmp_path))),
        consul_token_file="/token",
        consul_ca_file="/ca.pem",
    )
    native_labels = labels(native)
    # Compose restarts containers by their restart policies: no watchdog.
    del native_labels[WATCHDOG]
    native_labels["envoy"] = [  # natively from consul_sd.py's file
        *({"instance": f"{i.id}-sidecar", "service": i.service} for i in topology.instances()),
        *({"instance": f"{e.id}-sidecar", "service": "edge"} for e in topology.edge.instances),
    ]
    compose_config = document.prometheus_config(topology, ComposePlacement.of(topology))
    assert labels(compose_config) == native_labels


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    """Debian's promtool has no consul_sd_configs: the rest of the config is checked by it
    (with the Consul token file, which it opens, here)."""
    promtool = provision.PROMETHEUS.binaries(cache_dir())["promtool"]
    config = yaml.safe_load(document.PROMETHEUS_FILE.read_text())
    token = tmp_path / "prometheus.token"
    token.write_text("a-token")
    for job in config["scrape_configs"]:
        job.pop("consul_sd_configs", None)
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("index", [0, 1])
def test_each_edge_listens_on_the_container_and_calls_its_sidecar_on_loopback(
    topology: Topology, tmp_path: Path, index: int
) -> None:
    protos.ensure_generated()
    edge = topology.edge.instances[index]
    edge_files = EdgeFiles(
        tmp_path / "edge.pem", tmp_path / "edge-key.pem", protos.DESCRIPTOR_SET, EDGE_ADMIN_SOCKET
    )
    config = envoy_config(topology, ComposePlacement.of(topology), edge_files, edge)
    listeners = config["static_resources"]["listeners"]
    assert {lis["address"]["socket_address"]["address"] for lis in listeners} == {"0.0.0.0"}
    ports = {
        (
            lis["address"]["socket_address"]["protocol"],
            lis["address"]["socket_address"]["port_value"],
        )
        for lis in listeners
    }
    assert ports == {
        ("TCP", edge.http_port),
        ("TCP", edge.https_port),
        ("UDP", topology.edge.https_port),
        ("TCP", edge.metrics_port),
    }
    assert config["admin"]["address"] == {"pipe": {"path": str(EDGE_ADMIN_SOCKET), "mode": 0o600}}
    endpoints = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        for c in config["static_resources"]["clusters"]
    }
    jaeger = endpoints.pop(OTLP_CLUSTER)["socket_address"]
    assert jaeger["address"] == ComposePlacement.of(topology).address(JAEGER)
    assert jaeger["port_value"] == topology.jaeger.ports.otlp_grpc
    service = endpoints.pop(RATELIMIT_CLUSTER)["socket_address"]
    assert service["address"] == ComposePlacement.of(topology).address(RATELIMIT)
    assert service["port_value"] == topology.ratelimit_ports.grpc
    assert endpoints.pop(ADMIN_CLUSTER) == {"pipe": {"path": str(EDGE_ADMIN_SOCKET)}}
    assert {(a["socket_address"]["address"], a["socket_address"]["port_value"])
            for a in endpoints.values()} == {
        ("127.0.0.1", u.local_bind_port) for u in edge.upstreams
    }  # fmt: skip


def test_the_rate_limit_service_has_the_native_settings_but_for_hosts_and_password(
    topology: Topology, doc: dict[str, Any], tmp_path: Path
) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    binaries = {"ratelimit": Path("ratelimit")}
    native = service_spec(topology, NativePlacement.of(topology), state, binaries).env
    container = doc["services"]["ratelimit"]
    env = container["environment"]
    assert env.keys() == native.keys() - {"REDIS_AUTH"}
    hosts = {"GRPC_HOST", "HOST", "DEBUG_HOST", "PROMETHEUS_ADDR", "REDIS_URL", "RUNTIME_ROOT"}
    for key in env.keys() - hosts:
        assert env[key] == native[key], key
    assert env["REDIS_URL"] == f"redis:{topology.redis_port}"
    # The password comes from the state volume when the container starts.
    assert str(ratelimit.password_file(volume.STATE)) in container["command"][0]
    assert container["networks"]["mesh"]["ipv4_address"] == ComposePlacement.of(topology).address(
        RATELIMIT
    )
    for e in topology.edge.instances:
        assert doc["services"][e.id]["depends_on"]["ratelimit"] == {"condition": "service_healthy"}
    redis = doc["services"]["redis"]
    assert redis["command"] == ["redis-server", str(ratelimit.redis_config_file(volume.STATE))]
    assert "ports" not in redis and "ports" not in container  # reached on the network only


def test_each_edge_is_registered_at_its_container_address(topology: Topology) -> None:
    placement = ComposePlacement.of(topology)
    addresses = set()
    for edge in topology.edge.instances:
        address = placement.address(edge.id)
        addresses.add(address)
        registration = edge_registration(topology, placement, edge)
        sidecar = registration["Connect"]["SidecarService"]
        assert registration["ID"] == edge.id
        assert registration["Address"] == sidecar["Address"] == address
        assert registration["Check"]["HTTP"] == f"http://{address}:{edge.metrics_port}/ready"
        assert sidecar["Port"] == edge.sidecar.port
        upstreams = sidecar["Proxy"]["Upstreams"]
        assert [(u["DestinationName"], u["LocalBindPort"]) for u in upstreams] == [
            (u.service, u.local_bind_port) for u in edge.upstreams
        ]
    assert len(addresses) == len(topology.edge.instances)


def test_the_kafka_image_gets_the_jmx_agent_the_native_nodes_run() -> None:
    version, sha256 = document.JMX_EXPORTER
    assert f"<jmx-exporter.version>{version}</" in provision.KAFKA_POM.read_text()
    jar = provision.KAFKA.binaries(cache_dir())["jmx_agent"]
    assert jar.exists(), f"{jar} is missing: run `mesh install`"
    assert provision.sha256_of(jar) == sha256
