"""The edge's rate-limit service for real, without the mesh: the provisioned redis-server and
envoyproxy/ratelimit, started by the runtime's own process specs on free ports in a temporary
state dir (never the topology's ports), asked over gRPC the way the edge's Envoy asks."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from mesh.components import ratelimit
from mesh.placement import NativePlacement
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.provision import RATELIMIT
from mesh.runtime.ratelimit import redis_answers, service_spec
from mesh.topology import Topology, load
from tests.ratelimit_processes import binaries, on_free_ports, rate_limit_service, service_ports

SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
OK, OVER_LIMIT = 1, 2  # RateLimitResponse.Code


def _rls_messages() -> tuple[type, type]:
    """RateLimitRequest and RateLimitResponse of envoy/service/ratelimit/v3/rls.proto, with only
    the fields used here (same names and numbers, so the same bytes on the wire; the response's
    other fields are skipped as unknown)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="shopmesh_test/rls.proto", package="envoy.service.ratelimit.v3", syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto
    string, uint32, message = field.TYPE_STRING, field.TYPE_UINT32, field.TYPE_MESSAGE
    one, many = field.LABEL_OPTIONAL, field.LABEL_REPEATED

    def add(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto.message_type.add(name=name).field.extend(
            field(name=f, number=n, type=t, label=label, type_name=type_name or None)
            for f, n, t, label, type_name in fields
        )

    prefix = ".envoy.service.ratelimit.v3."
    add("Entry", ("key", 1, string, one, ""), ("value", 2, string, one, ""))
    add("Descriptor", ("entries", 1, message, many, prefix + "Entry"))
    add(
        "RateLimitRequest",
        ("domain", 1, string, one, ""),
        ("descriptors", 2, message, many, prefix + "Descriptor"),
        ("hits_addend", 3, uint32, one, ""),
    )
    add("Limit", ("requests_per_unit", 1, uint32, one, ""))
    add(
        "DescriptorStatus",
        ("code", 1, uint32, one, ""),
        ("current_limit", 2, message, one, prefix + "Limit"),
        ("limit_remaining", 3, uint32, one, ""),
    )
    add(
        "RateLimitResponse",
        ("overall_code", 1, uint32, one, ""),
        ("statuses", 2, message, many, prefix + "DescriptorStatus"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request, response = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{prefix[1:]}{name}"))
        for name in ("RateLimitRequest", "RateLimitResponse")
    )
    return request, response


RateLimitRequest, RateLimitResponse = _rls_messages()


@dataclass
class Service:
    topology: Topology
    state: StateDir
    start: Callable[[ProcessSpec], None]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Redis and the rate-limit service with the topology's limits on ports of their own."""
    topology = on_free_ports(load())
    state = StateDir(tmp_path_factory.mktemp("ratelimit-state"))
    state.ensure()
    with rate_limit_service(topology, state) as start:
        yield Service(topology, state, start)


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def ask(ch: grpc.Channel, descriptors: dict[str, str], hits: int = 1):
    """One ShouldRateLimit call with the edge's domain, one descriptor per (key, value)."""
    call = ch.unary_unary(
        SHOULD_RATE_LIMIT,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=RateLimitResponse.FromString,
    )
    request = RateLimitRequest(domain=ratelimit.DOMAIN, hits_addend=hits)
    for key, value in descriptors.items():
        request.descriptors.add().entries.add(key=key, value=value)
    return call(request, timeout=2)


def within_one_window(seconds: int, needed: float) -> None:
    """The service counts in fixed windows aligned to the clock: start a burst early enough in
    one that it ends in the same window."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.05)


def user(name: str) -> dict[str, str]:
    """The descriptors the edge sends for a request with a verified token."""
    return {ratelimit.PER_IP_KEY: "127.0.0.1", ratelimit.PER_USER_KEY: name}


def test_the_101st_request_of_one_user_in_a_minute_is_over_limit(service: Service) -> None:
    limit = service.topology.edge.per_user_limit
    assert limit.per_seconds == 60
    one, another = f"one-{uuid.uuid4().hex[:8]}", f"another-{uuid.uuid4().hex[:8]}"
    within_one_window(limit.per_seconds, needed=5)
    with channel(service.topology.ratelimit_ports.grpc) as ch:
        answers = [ask(ch, user(one)) for _ in range(limit.requests)]
        refused = ask(ch, user(one))
        other = ask(ch, user(another))

    assert [a.overall_code for a in answers] == [OK] * limit.requests
    assert answers[-1].statuses[1].limit_remaining == 0
    assert refused.overall_code == OVER_LIMIT
    per_ip, per_user = refused.statuses
    assert (per_ip.code, per_user.code) == (OK, OVER_LIMIT)
    assert per_user.current_limit.requests_per_unit == limit.requests
    assert other.overall_code == OK


def test_the_per_ip_limit_is_the_topologys_per_second(service: Service) -> None:
    limit = service.topology.edge.per_ip_limit
    assert limit.per_seconds == 1
    address = {ratelimit.PER_IP_KEY: f"192.0.2.{uuid.uuid4().int % 250 + 1}"}
    within_one_window(limit.per_seconds, needed=0.3)
    with channel(service.topology.ratelimit_ports.grpc) as ch:
        at_the_limit = ask(ch, address, hits=limit.requests)
        over = ask(ch, address)
    assert at_the_limit.overall_code == OK
    assert over.overall_code == OVER_LIMIT
    assert over.statuses[0].current_limit.requests_per_unit == limit.requests


def test_one_users_budget_holds_across_two_service_instances(service: Service) -> None:
    """Two edges, each with a rate-limit service of its own, count in the same Redis."""
    ports = service_ports()
    second = replace(service.topology, ratelimit_ports=ports)
    spec = service_spec(second, NativePlacement.of(second), service.state, binaries(RATELIMIT))
    service.start(replace(spec, name="ratelimit-2"))
    limit = service.topology.edge.per_user_limit
    name = f"both-{uuid.uuid4().hex[:8]}"
    within_one_window(limit.per_seconds, needed=5)
    with channel(service.topology.ratelimit_ports.grpc) as a, channel(ports.grpc) as b:
        codes = [ask(a if i % 2 else b, user(name)).overall_code for i in range(limit.requests)]
        refused = [ask(a, user(name)).overall_code, ask(b, user(name)).overall_code]
    assert codes == [OK] * limit.requests
    assert refused == [OVER_LIMIT, OVER_LIMIT]


def test_redis_answers_only_with_the_password(service: Service) -> None:
    host, port = service.topology.bind_host, service.topology.redis_port
    assert redis_answers(host, port, ratelimit.redis_password(service.state)) is None
    refused = redis_answers(host, port, "not-the-password")
    assert refused is not None and "WRONGPASS" in refused
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(100).startswith(b"-NOAUTH")


def test_the_secrets_are_owner_only(service: Service) -> None:
    for path in (ratelimit.password_file(service.state),
                 ratelimit.redis_config_file(service.state)):  # fmt: skip
        assert path.stat().st_mode & 0o077 == 0, path
