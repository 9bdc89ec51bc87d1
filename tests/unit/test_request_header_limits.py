"""The edge refuses oversized request headers itself, with a 431 problem on every protocol, below
what the sidecars and the services behind it accept (docs/gateway.md#request-header-limits)."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import grpc
from aiohttp import web_protocol
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.components import edge, edge_metrics
from mesh.components.edge import EdgeFiles, envoy_config
from mesh.placement import NativePlacement
from mesh.runtime import protos
from mesh.topology import load
from services.common import grpc_server

FILES = EdgeFiles(
    Path("/certs/edge.pem"),
    Path("/certs/edge-key.pem"),
    protos.DESCRIPTOR_SET,
    Path("/state/admin/edge-1.sock"),
)
# Envoy's default header count, which Consul's sidecars keep.
SIDECAR_MAX_HEADERS = 100
# What the mesh adds to a request after the edge's check: the edge (x-envoy-expected-rq-timeout-ms,
# traceparent, the transcoder's x-envoy-original-*), the internal JWT in place of the client's
# token, the sidecars (x-forwarded-client-cert, ...). Generously above what they measure.
MESH_ADDED_HEADERS = 16
MESH_ADDED_BYTES = 2048
# gRPC counts every metadata entry 32 bytes over its name and value (HPACK's entry size).
GRPC_ENTRY_OVERHEAD = 32


def hcms() -> dict[str, dict]:
    listeners = envoy_config(load(), NativePlacement.of(load()), FILES, load().edge.instances[0])[
        "static_resources"
    ]["listeners"]
    return {
        it["name"]: it["filter_chains"][0]["filters"][0]["typed_config"]
        for it in listeners
        if it["name"] != edge_metrics.STAT_PREFIX
    }


def aiohttp_default(parameter: str) -> int:
    """aiohttp's server default (the services' runner does not change it)."""
    return inspect.signature(web_protocol.RequestHandler.__init__).parameters[parameter].default


def test_the_header_limits_come_right_after_admission_on_every_listener() -> None:
    for name, hcm in hcms().items():
        admission, limits = hcm["http_filters"][:2]
        assert admission["name"] == edge.ADMISSION, name
        assert limits["typed_config"]["default_source_code"]["inline_string"] == (
            edge.REQUEST_HEADERS_LUA
        ), name


def test_the_lua_filter_checks_the_limits_the_module_states() -> None:
    assert edge.REQUEST_HEADERS_LUA.startswith(
        f"local max_bytes, max_count = {edge.MAX_REQUEST_HEADER_BYTES}, "
        f"{edge.MAX_REQUEST_HEADERS}\n"
    )
    assert 'handle:respond({[":status"] = "431"}' in edge.REQUEST_HEADERS_LUA


def test_the_codecs_refuse_only_above_the_lua_limits() -> None:
    # Under the codecs' ceilings every protocol gets the Lua filter's 431 problem; above them an
    # HTTP/2 or HTTP/3 stream is reset without a response.
    for name, hcm in hcms().items():
        assert hcm["max_request_headers_kb"] * 1024 > edge.MAX_REQUEST_HEADER_BYTES, name
        count = hcm["common_http_protocol_options"]["max_headers_count"]
        assert count > edge.MAX_REQUEST_HEADERS, name


def test_what_the_edge_lets_through_every_sidecar_and_http_service_accepts() -> None:
    # One field can be no bigger than all of them together; aiohttp refuses a field over
    # max_field_size (name and value) and more than max_headers fields.
    assert aiohttp_default("max_field_size") > edge.MAX_REQUEST_HEADER_BYTES
    headers = edge.MAX_REQUEST_HEADERS + MESH_ADDED_HEADERS
    assert headers <= SIDECAR_MAX_HEADERS
    assert headers <= aiohttp_default("max_headers")


def test_what_the_edge_lets_through_the_grpc_services_accept() -> None:
    entries = edge.MAX_REQUEST_HEADERS + MESH_ADDED_HEADERS
    arriving = edge.MAX_REQUEST_HEADER_BYTES + MESH_ADDED_BYTES + entries * GRPC_ENTRY_OVERHEAD
    assert arriving <= grpc_server.MAX_METADATA_BYTES


def test_a_431_is_a_problem_of_its_own_before_the_generic_one() -> None:
    mappers = hcms()["http"]["local_reply_config"]["mappers"]
    statuses = [m["filter"].get("status_code_filter", {}).get("comparison") for m in mappers]
    at_431 = statuses.index({"op": "EQ", "value": {
        "default_value": 431, "runtime_key": "edge_headers_too_large_status"}})  # fmt: skip
    generic = next(i for i, s in enumerate(statuses) if s and s["op"] == "GE")
    assert at_431 < generic
    body = mappers[at_431]["body_format_override"]
    assert body["content_type"] == "application/problem+json"
    problem = body["json_format"]
    assert problem["type"] == "/problems/request-headers-too-large"
    assert problem["status"] == 431
    assert str(edge.MAX_REQUEST_HEADER_BYTES) in problem["detail"]
    json.dumps(problem)


def metadata_sizes_accepted(sizes: list[int], calls: int = 10) -> dict[int, int]:
    """How many of `calls` health checks carrying one `x-big` entry of each size a server with
    the services' options answers."""

    async def run() -> dict[int, int]:
        server = grpc.aio.server(options=grpc_server.SERVER_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        accepted = dict.fromkeys(sizes, 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for size in sizes:
                    for _ in range(calls):
                        try:
                            await stub.Check(
                                health_pb2.HealthCheckRequest(),
                                metadata=[("x-big", "a" * size)],
                                timeout=5,
                            )
                            accepted[size] += 1
                        except grpc.aio.AioRpcError as exc:
                            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await server.stop(0)
        return accepted

    return asyncio.run(run())


def test_grpc_services_take_every_call_up_to_their_metadata_limit_and_none_above() -> None:
    below = grpc_server.MAX_METADATA_BYTES - 1024
    above = grpc_server.MAX_METADATA_BYTES + 1024
    # Over gRPC's default soft limit of 8 KiB, where it would refuse a random share.
    assert below > 8 * 1024
    assert metadata_sizes_accepted([below, above]) == {below: 10, above: 0}
