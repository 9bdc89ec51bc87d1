"""The configs of the edge's global rate limits (Redis and envoyproxy/ratelimit), generated from
the topology; the real processes are in tests/integration/test_ratelimit_service.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mesh.components import ratelimit
from mesh.placement import ComposePlacement, NativePlacement
from mesh.runtime.paths import StateDir
from mesh.runtime.ratelimit import redis_spec, service_spec
from mesh.topology import TOPOLOGY_FILE, TopologyError, load, parse

BINARIES = {"redis-server": Path("/usr/bin/redis-server"), "ratelimit": Path("/bin/ratelimit")}


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path)
    state.ensure()
    return state


def test_the_service_counts_per_ip_per_second_and_per_user_per_minute() -> None:
    edge = load().edge
    config = ratelimit.service_config(load())
    assert config["domain"] == "edge"
    assert config["descriptors"] == [
        {"key": "remote_address",
         "rate_limit": {"unit": "second", "requests_per_unit": edge.per_ip_limit.requests}},
        {"key": "user",
         "rate_limit": {"unit": "minute", "requests_per_unit": edge.per_user_limit.requests}},
    ]  # fmt: skip
    assert (edge.per_ip_limit.requests, edge.per_user_limit.requests) == (1000, 100)


def test_the_service_config_is_where_its_runtime_loader_looks(state: StateDir) -> None:
    ratelimit.write_service_config(load(), state)
    env = ratelimit.service_env(load(), NativePlacement.of(load()), state)
    assert env["RUNTIME_WATCH_ROOT"] == "false"
    # <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/config/*.yaml
    directory = Path(env["RUNTIME_ROOT"]) / env["RUNTIME_SUBDIRECTORY"] / "config"
    (written,) = directory.glob("*.yaml")
    assert yaml.safe_load(written.read_text()) == ratelimit.service_config(load())


def test_every_listener_of_the_service_is_on_the_bind_host_at_its_topology_port(
    state: StateDir,
) -> None:
    topology = load()
    ports = topology.ratelimit_ports
    spec = service_spec(topology, NativePlacement.of(topology), state, BINARIES)
    env = spec.env
    host = topology.bind_host
    assert (env["GRPC_HOST"], env["GRPC_PORT"]) == (host, str(ports.grpc))
    assert (env["HOST"], env["PORT"]) == (host, str(ports.http))
    assert (env["DEBUG_HOST"], env["DEBUG_PORT"]) == (host, str(ports.debug))
    assert env["PROMETHEUS_ADDR"] == f"{host}:{ports.metrics}"
    assert (env["USE_STATSD"], env["USE_PROMETHEUS"]) == ("false", "true")
    assert (env["REDIS_SOCKET_TYPE"], env["REDIS_URL"]) == ("tcp", f"{host}:{topology.redis_port}")
    assert env["LOG_FORMAT"] == "json"
    assert sorted(spec.ports) == sorted(vars(ports).values())


def test_the_redis_password_is_generated_once_owner_only_and_never_on_a_command_line(
    state: StateDir,
) -> None:
    topology = load()
    password = ratelimit.redis_password(state)
    assert ratelimit.redis_password(state) == password and len(password) >= 24
    assert ratelimit.password_file(state).stat().st_mode & 0o077 == 0
    native = NativePlacement.of(topology)
    redis = redis_spec(topology, native, state, BINARIES)
    service = service_spec(topology, native, state, BINARIES)
    assert service.env["REDIS_AUTH"] == password
    assert "REDIS_AUTH" not in ratelimit.service_env(topology, ComposePlacement.of(topology), state)
    for spec in (redis, service):
        assert not any(password in arg for arg in spec.argv), spec.name


def test_redis_binds_the_bind_host_keeps_nothing_on_disk_and_wants_the_password(
    state: StateDir,
) -> None:
    topology = load()
    spec = redis_spec(topology, NativePlacement.of(topology), state, BINARIES)
    assert spec.ports == (topology.redis_port,)
    assert spec.before_start is not None
    spec.before_start()
    config_file = Path(spec.argv[1])
    assert config_file.stat().st_mode & 0o077 == 0
    lines = config_file.read_text().splitlines()
    assert f"bind {topology.bind_host}" in lines
    assert f"port {topology.redis_port}" in lines
    assert {"protected-mode yes", 'save ""', "appendonly no"} <= set(lines)
    assert f"requirepass {ratelimit.redis_password(state)}" in lines


def test_a_rate_limit_window_the_service_cannot_count_in_is_rejected() -> None:
    raw = copy.deepcopy(yaml.safe_load(TOPOLOGY_FILE.read_text()))
    raw["edge"]["rate_limits"]["per_user"]["per_seconds"] = 90
    with pytest.raises(TopologyError, match="per_user: per_seconds must be one of"):
        parse(raw)


def test_the_topology_gives_redis_and_the_service_their_ports() -> None:
    ports = load().all_ports()
    assert ports["redis"] == load().redis_port
    assert {name for name in ports if name.startswith("ratelimit ")} == {
        "ratelimit grpc", "ratelimit http", "ratelimit debug", "ratelimit metrics",
    }  # fmt: skip
