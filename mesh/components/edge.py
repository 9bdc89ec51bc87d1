"""The edge gateway's Envoy config, generated from the topology (docs/gateway.md explains it).

One config per edge instance. Listeners: plain HTTP (local use) and TLS on TCP (HTTP/1.1 and
HTTP/2 by ALPN) on the instance's own ports, behind the balancer, which opens each connection
with a PROXY protocol v2 header naming the client (read by the proxy_protocol listener filter;
a connection without one, straight to the instance's port, is taken as it is); QUIC on the
public UDP port (HTTP/3, same certificate, advertised by Alt-Svc), which every edge binds with
SO_REUSEPORT. All share one filter chain:

  admission (adaptive concurrency: a 503 problem at once over the limit) →
  header limits (Lua: a 431 problem over them) → jwt_authn (external token, remote JWKS from
  auth) → ratelimit (the global rate-limit service: per client IP and per user, the token's
  sub) → token exchange (Lua: auth's internal JWT for the external token, cached per worker)
  → mesh denials (Lua)
  → grpc_json_transcoder (REST ↔ gRPC for users, payments) → upstream problems (Lua) → router

Every upstream is a loopback listener of the edge's own Connect sidecar, which carries the
request over mTLS to the service's sidecar. The listeners are on the placement's listen address
for the edge, among them the one of /ready and /metrics (mesh/components/edge_metrics.py: the
balancer, Consul and Prometheus call it); the admin API is on a Unix socket, its user's only. The
rate-limit service (where the placement runs one) and Jaeger are at their addresses (or, where
a placement has none, their names, resolved by DNS).

Tracing: the edge starts a trace for `tracing.sample_percent` of the requests (or continues the
client's W3C traceparent, sampled or not, or traces any request with `x-client-trace-id`), sends
its span to Jaeger over OTLP gRPC and passes traceparent upstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from mesh import envoy_memory
from mesh.components import edge_metrics, ratelimit
from mesh.envoy_tracing import EnvoyTracer, discovery_type
from mesh.placement import LOOPBACK, RATELIMIT, Placement
from mesh.runtime import envoy_admin, protos
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import EdgeInstance, Route, Topology

T = "type.googleapis.com/envoy.extensions."
HCM = T + "filters.network.http_connection_manager.v3.HttpConnectionManager"
STDOUT_LOG = T + "access_loggers.stream.v3.StdoutAccessLog"
TLS_CONTEXT = T + "transport_sockets.tls.v3.DownstreamTlsContext"
QUIC_TRANSPORT = T + "transport_sockets.quic.v3.QuicDownstreamTransport"
PROXY_PROTOCOL = T + "filters.listener.proxy_protocol.v3.ProxyProtocol"
HTTP_OPTIONS = T + "upstreams.http.v3.HttpProtocolOptions"
# The key of a cluster's typed_extension_protocol_options that holds its HTTP_OPTIONS.
HTTP_OPTIONS_EXTENSION = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# An upstream connection idle this long is closed, so the pool an overload grew (hundreds of
# HTTP/1.1 connections, tens of KiB of Envoy memory each) shrinks back instead of lasting for
# Envoy's default hour.
UPSTREAM_IDLE_TIMEOUT = "15s"
JWT_AUTHN = T + "filters.http.jwt_authn.v3"
RATELIMIT_FILTER = T + "filters.http.ratelimit.v3.RateLimit"
TRANSCODER = T + "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
ROUTER = T + "filters.http.router.v3.Router"
LUA = T + "filters.http.lua.v3.Lua"
LUA_PER_ROUTE = T + "filters.http.lua.v3.LuaPerRoute"
ADAPTIVE_CONCURRENCY = T + "filters.http.adaptive_concurrency.v3.AdaptiveConcurrency"
ADMISSION = "envoy.filters.http.adaptive_concurrency"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
# The latency percentile the admission limit follows, and how often it is recomputed.
ADMISSION_PERCENTILE = 50
ADMISSION_UPDATE_S = 0.1
TOKEN_EXCHANGE = "shopmesh.token_exchange"
# The Lua source stays beside the native runtime (services/auth/README.md points there).
TOKEN_EXCHANGE_LUA = REPO_ROOT / "mesh" / "runtime" / "token_exchange.lua"
EXCHANGE_TIMEOUT_MS = 2000
# Auth's list of the users blocked lately (services/auth/blocks.py), asked for by each edge
# worker every token_cache.blocks_every_s; its exchanges are kept longer only while what the
# answers cover is at most this many of those intervals old (auth's own "current" point trails
# by up to its consumer's 5 s empty fetch).
BLOCKS_PATH = "/auth/blocks"
BLOCKS_TIMEOUT_MS = 1000
BLOCKS_STALE_INTERVALS = 6
# Up to this share of an exchange's lifetime is taken off at random (token_exchange.lua).
TOKEN_CACHE_JITTER = 0.5
# Dynamic metadata namespace of the edge's own Lua filters.
EDGE_METADATA = "shopmesh.edge"
# %REQ_WITHOUT_QUERY(...)% is a formatter extension: every format that uses it must load it
# (without it Envoy refuses the config: "Not supported field in StreamInfo").
FORMATTERS = [{
    "name": "envoy.formatter.req_without_query",
    "typed_config": {"@type": T + "formatter.req_without_query.v3.ReqWithoutQuery"},
}]  # fmt: skip

JWT_PROVIDER = "shopmesh"
# The same issuer and keys, also taking the token from `?access_token=`: browsers cannot set
# headers on a WebSocket, so only the WebSocket route accepts a token in its URL.
JWT_QUERY_PROVIDER = "shopmesh-query"
TOKEN_QUERY_PARAMETER = "access_token"
EXTERNAL_AUDIENCE = "shopmesh-api"
JWT_METADATA = "jwt_payload"
RATELIMIT_CLUSTER = "ratelimit"
# Headers only the edge (through auth) may set; whatever a client sends under these names is
# dropped. Services trust nothing but the internal JWT they verify themselves.
INTERNAL_HEADERS = ("x-shopmesh-principal", "x-shopmesh-roles", "x-jwt-payload")
# The client's address (the peer's, or the balancer's PROXY header's), set on every routed
# request in place of anything a client sent under that name: auth counts failed logins per
# client address by it, and payments tells a public caller from a service by its presence
# (services/common/client_address.py). X-Forwarded-For's first entries are the client's own.
CLIENT_ADDRESS_HEADER = "x-shopmesh-client-address"
CLIENT_ADDRESS = {
    "header": {"key": CLIENT_ADDRESS_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
}

ACCESS_LOG_FORMAT = {
    "ts": "%START_TIME%",
    "service": "edge",
    "method": "%REQ(:METHOD)%",
    # Without the query string: it may carry a token (`?access_token=` on the WebSocket route).
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
}

# RFC 9457 bodies for the replies the edge makes itself (401, 404, 429, 503, ...).
PROBLEM_BODY = {
    "type": "/problems/edge",
    "title": "%RESPONSE_CODE_DETAILS%",
    "status": "%RESPONSE_CODE%",
    "detail": "%LOCAL_REPLY_BODY%",
    "instance": "%REQ_WITHOUT_QUERY(:PATH)%",
}

# An upstream 5xx that is not a problem document (a sidecar's "no healthy upstream", an empty
# 503 while an instance is critical) becomes one, so clients see problem+json from every error.
# Services' own problem documents pass unchanged.
UPSTREAM_PROBLEM_LUA = """
local titles = {[500] = "Internal Server Error", [502] = "Bad Gateway",
                [503] = "Service Unavailable", [504] = "Gateway Timeout"}

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = tonumber(headers:get(":status"))
  if status == nil or status < 500 then return end
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/problem+json", 1, true) then return end
  local body = string.format(
    '{"type":"/problems/upstream","title":"%s","status":%d,'
    .. '"detail":"the service behind this route could not answer; retry later"}',
    titles[status] or "Upstream Error", status)
  headers:replace("content-type", "application/problem+json")
  headers:remove("content-length")
  handle:body(true):setBytes(body)
end
"""

# A sidecar refusing a call that no intention allows (Consul's RBAC filter) answers a bare
# text/plain 403 "RBAC: access denied"; a transcoded gRPC call gets the same message in the
# transcoder's JSON status (PERMISSION_DENIED). Both become this problem. Services' own 403s
# (problem documents, or a gRPC service's own PERMISSION_DENIED) pass unchanged.
RBAC_DENIAL = "RBAC: access denied"
MESH_DENIAL_PROBLEM = {
    "type": "/problems/forbidden-by-mesh",
    "title": "Forbidden by the mesh",
    "status": 403,
    "detail": "the mesh's intentions do not allow the edge to call the service behind this route",
}
MESH_DENIAL_LUA = (
    f"local problem = [[{json.dumps(MESH_DENIAL_PROBLEM)}]]\n"
    f"local denial = [[{RBAC_DENIAL}]]\n"
    + """
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(":status") ~= "403" then return end
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "application/problem+json", 1, true) then return end
  local body = handle:body(true)
  if not string.find(body:getBytes(0, body:length()), denial, 1, true) then return end
  -- Buffering the body yielded: the headers object from before is no longer valid.
  headers = handle:headers()
  headers:replace("content-type", "application/problem+json")
  headers:remove("content-length")
  body:setBytes(problem)
end
"""
)

# What a request's headers may add up to at the edge: the name and value of every field, the
# pseudo-headers (method, path, authority, scheme) and what Envoy adds before the filters
# (x-request-id, x-forwarded-*) included. Below what every service accepts: aiohttp refuses a
# field over 8190 bytes or more than 128 fields (a text/plain 400, before any middleware), a
# sidecar more than 100 fields (a text/plain 431), and the gRPC services take 16 KiB of metadata
# (services/common/grpc_server.py), room for what the mesh adds on the way. A bearer JWT and
# a client's usual headers come to 1-2 KiB.
MAX_REQUEST_HEADER_BYTES = 8000
MAX_REQUEST_HEADERS = 64
# Envoy's codecs refuse beyond these (its defaults, stated): HTTP/1 with a 431, which the local
# reply mappers make a problem, but HTTP/2 and HTTP/3 by resetting the stream, no response at
# all. So the limits above are a Lua filter's, whose 431 is a local reply on every protocol.
CODEC_MAX_REQUEST_HEADERS_KB = 60
CODEC_MAX_HEADERS_COUNT = 100
REQUEST_HEADERS_LUA = (
    f"local max_bytes, max_count = {MAX_REQUEST_HEADER_BYTES}, {MAX_REQUEST_HEADERS}\n"
    + """
function envoy_on_request(handle)
  local bytes, count = 0, 0
  for name, value in pairs(handle:headers()) do
    bytes = bytes + #name + #value
    count = count + 1
  end
  if bytes > max_bytes or count > max_count then
    handle:respond({[":status"] = "431"}, "")
  end
end
"""
)
HEADERS_TOO_LARGE_PROBLEM = {
    "type": "/problems/request-headers-too-large",
    "title": "Request Header Fields Too Large",
    "status": 431,
    "detail": f"the request's headers are over the edge's limit of {MAX_REQUEST_HEADER_BYTES} "
    f"bytes and {MAX_REQUEST_HEADERS} fields in all",
    "instance": "%REQ_WITHOUT_QUERY(:PATH)%",
}


@dataclass(frozen=True)
class EdgeFiles:
    """Files the config points at: the edge's TLS certificate, the protos' descriptor set and
    the Unix socket its admin API listens on (mesh/runtime/envoy_admin.py)."""

    server_cert: Path
    server_key: Path
    descriptor_set: Path
    admin_socket: Path


def tracer(topology: Topology, placement: Placement) -> EnvoyTracer:
    return EnvoyTracer("edge", placement.otlp_endpoint(topology))


def issuer(topology: Topology, placement: Placement) -> str:
    """The external tokens' issuer: auth as clients reach it, through the edge over TLS."""
    return f"https://{placement.public()}:{topology.edge.https_port}/auth"


def public_origins(topology: Topology, placement: Placement) -> list[str]:
    """The origins a browser reaches the edge at over TLS: the public address, and `localhost`
    too when that is the loopback address (a browser on the same machine may use either)."""
    port = topology.edge.https_port
    hosts = [placement.public()]
    if placement.public() == LOOPBACK:
        hosts.append("localhost")
    return [f"https://{host}:{port}" for host in hosts]


def cluster_name(service: str) -> str:
    return f"mesh-{service}"


def grpc_package(service: str) -> str:
    return f"shopmesh.{service}.v1"


def grpc_services(descriptor_set: Path, services: list[str]) -> list[str]:
    """The full names of the gRPC services that `services` (topology names) define."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    packages = {grpc_package(s) for s in services}
    return [f"{f.package}.{svc.name}" for f in files if f.package in packages for svc in f.service]


def _socket(host: str, port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port, "protocol": protocol}}


def _static_cluster(name: str, host: str, port: int, *, http2: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = (
        {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    )
    return {
        "name": name,
        "type": discovery_type(host),
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
        },
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_EXTENSION: {
                "@type": HTTP_OPTIONS,
                "common_http_protocol_options": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
                "explicit_http_config": protocol,
            }
        },
    }


def _cluster(topology: Topology, service: str, port: int) -> dict[str, Any]:
    """The edge sidecar's upstream listener for `service`: in the edge's network namespace.

    HTTP/2 (the listener's codec takes either) unless a WebSocket route goes to `service`:
    Envoy would turn its upgrade into an extended CONNECT, which the sidecar's listener does
    not allow. Over HTTP/1.1 every request in flight holds a connection of its own, in the edge
    and in its sidecar: an overload left each edge with ~300 of them (docs/performance.md)."""
    websocket = any(route.websocket for route in topology.edge.routes if route.service == service)
    return _static_cluster(cluster_name(service), LOOPBACK, port, http2=not websocket)


def _ratelimit_cluster(topology: Topology, placement: Placement) -> dict[str, Any]:
    port = topology.ratelimit_ports.grpc
    return _static_cluster(RATELIMIT_CLUSTER, placement.address(RATELIMIT), port, http2=True)


def _per_route(route: Route) -> dict[str, Any]:
    if route.auth == "none":
        return {
            "envoy.filters.http.jwt_authn": {"@type": f"{JWT_AUTHN}.PerRouteConfig",
                                             "disabled": True},
            TOKEN_EXCHANGE: {"@type": LUA_PER_ROUTE, "disabled": True},
        }  # fmt: skip
    return {
        "envoy.filters.http.jwt_authn": {
            "@type": f"{JWT_AUTHN}.PerRouteConfig",
            "requirement_name": JWT_QUERY_PROVIDER if route.websocket else JWT_PROVIDER,
        }
    }


def _route(route: Route) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster_name(route.service)}
    per_route = _per_route(route)
    if route.websocket:
        # A WebSocket holds its request for as long as it is open: counted by the admission
        # limit, a few hundred open ones would leave no room for anything else.
        per_route[ADMISSION] = {"@type": FILTER_CONFIG, "disabled": True}
        # A WebSocket lives as long as the client wants: no route timeout.
        action.update(timeout="0s", upgrade_configs=[{"upgrade_type": "websocket"}])
    else:
        action.update(
            timeout=f"{route.timeout_ms / 1000:g}s",
            retry_policy={"retry_on": "connect-failure,reset", "num_retries": 2},
        )
    # path_separated_prefix takes no trailing slash: `/` (every other path) is a plain prefix.
    match = {"prefix": "/"} if route.prefix == "/" else {"path_separated_prefix": route.prefix}
    return {
        "match": match,
        "route": action,
        # The edge's span is named after the route (not Envoy's generic "ingress"); the
        # sidecars keep their own ingress/egress names.
        "decorator": {"operation": f"{route.service} {route.prefix}", "propagate": False},
        "typed_per_filter_config": per_route,
    }


def routes(topology: Topology) -> list[dict[str, Any]]:
    edge = topology.edge
    table = [_route(route) for route in edge.routes if route.prefix != "/"]
    for route in edge.routes:
        if route.transcode:
            # A collection's custom methods (`/users:batchCreate`, AIP-136) are no path segment
            # below the route's prefix, so path_separated_prefix misses them.
            custom_methods = _route(route)
            custom_methods["match"] = {"prefix": f"{route.prefix}:"}
            # After transcoding, a REST request is a gRPC call: route it by the gRPC path too.
            grpc_route = _route(route)
            grpc_route["match"] = {"prefix": f"/{grpc_package(route.service)}."}
            table += [custom_methods, grpc_route]
    # Each HTTP service's OpenAPI spec, public at /openapi/<service>.yaml.
    public = Route(prefix="/openapi", service="", timeout_ms=5000, auth="none")
    for name in dict.fromkeys(r.service for r in edge.routes):
        if topology.service(name).protocol == "http":
            table.append({
                "match": {"path": f"/openapi/{name}.yaml"},
                "route": {"cluster": cluster_name(name), "prefix_rewrite": "/openapi.yaml"},
                "typed_per_filter_config": _per_route(public),
            })  # fmt: skip
    # The catch-all (the web front end) after every other route, the ones added here included.
    return table + [_route(route) for route in edge.routes if route.prefix == "/"]


def rate_limits() -> list[dict[str, Any]]:
    """The virtual host's descriptors, one per rule, sent to the rate-limit service with every
    request: the client address, and the verified token's sub (jwt_authn's metadata, never a
    header a client could set). Without a token (public routes) only the address counts."""
    user = {"metadata": {
        "descriptor_key": ratelimit.PER_USER_KEY,
        "metadata_key": {"key": "envoy.filters.http.jwt_authn",
                         "path": [{"key": JWT_METADATA}, {"key": "sub"}]},
        "source": "DYNAMIC",
        "skip_if_absent": True,
    }}  # fmt: skip
    return [{"actions": [{"remote_address": {}}]}, {"actions": [user]}]


def _admission_filter(topology: Topology) -> dict[str, Any]:
    """Envoy's adaptive concurrency filter with a fixed minRTT: the concurrency limit grows
    while the median latency of what the edge admitted is under the topology's latency_ms and
    shrinks while it is over, so an overload is answered 503 at once rather than queued."""
    admission = topology.edge.admission
    return {
        "name": ADMISSION,
        "typed_config": {
            "@type": ADAPTIVE_CONCURRENCY,
            "gradient_controller_config": {
                "sample_aggregate_percentile": {"value": ADMISSION_PERCENTILE},
                "concurrency_limit_params": {
                    "concurrency_update_interval": f"{ADMISSION_UPDATE_S}s",
                },
                "min_rtt_calc_params": {
                    "fixed_value": f"{admission.latency_ms / 1000:g}s",
                    "buffer": {"value": 0},
                    "min_concurrency": admission.min_concurrency,
                },
            },
            "concurrency_limit_exceeded_status": {"code": "ServiceUnavailable"},
        },
    }


def _ratelimit_filter() -> dict[str, Any]:
    """One filter for every rule: the service counts for every listener and every edge, and the
    reply carries one set of x-ratelimit-* headers (of the rule closest to its limit)."""
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": RATELIMIT_FILTER,
            "domain": ratelimit.DOMAIN,
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": RATELIMIT_CLUSTER}},
                "transport_api_version": "V3",
            },
            "timeout": "0.25s",
            # Fail open: with the service or Redis down (or slower than the timeout) requests
            # pass unlimited; an outage of the limiter must not take the API down with it.
            "failure_mode_deny": False,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limited_status": {"code": "TooManyRequests"},
        },
    }


def _token_exchange_filter(topology: Topology) -> dict[str, Any]:
    """The cached token exchange: mesh/runtime/token_exchange.lua with its settings."""
    cache = topology.edge.token_cache
    settings = (
        f"local MAX_AGE_S = {cache.max_age_s}\n"
        f"local JITTER = {TOKEN_CACHE_JITTER}\n"
        f"local MAX_ENTRIES = {cache.max_entries}\n"
        f"local AUTH_CLUSTER = {json.dumps(cluster_name('auth'))}\n"
        f"local TIMEOUT_MS = {EXCHANGE_TIMEOUT_MS}\n"
        f"local BLOCKS_PATH = {json.dumps(BLOCKS_PATH)}\n"
        f"local BLOCKS_EVERY_S = {cache.blocks_every_s:g}\n"
        f"local BLOCKS_STALE_S = {BLOCKS_STALE_INTERVALS * cache.blocks_every_s:g}\n"
        f"local BLOCKS_TIMEOUT_MS = {BLOCKS_TIMEOUT_MS}\n"
        f"local METADATA = {json.dumps(EDGE_METADATA)}\n"
    )
    source = settings + TOKEN_EXCHANGE_LUA.read_text()
    return {**_lua_filter(source), "name": TOKEN_EXCHANGE}


def _lua_filter(source: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": source}},
    }


def http_filters(
    topology: Topology, placement: Placement, files: EdgeFiles
) -> list[dict[str, Any]]:
    edge = topology.edge
    auth_cluster = cluster_name("auth")
    provider = {
        "issuer": issuer(topology, placement),
        "audiences": [EXTERNAL_AUDIENCE],
        "remote_jwks": {
            "http_uri": {"uri": "http://auth/auth/jwks", "cluster": auth_cluster, "timeout": "2s"},
            "cache_duration": f"{edge.jwks_cache_s}s",
            "async_fetch": {},
            "retry_policy": {"num_retries": 3},
        },
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "payload_in_metadata": JWT_METADATA,
        "clock_skew_seconds": 30,
        # No jwt_cache_config: a cached token cost each listener ~5 KB until it was evicted (only
        # by the cache being full), and checking an RS256 signature again took no CPU that the
        # bench could tell apart (docs/performance.md, "Memory").
    }
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": f"{JWT_AUTHN}.JwtAuthentication",
            "providers": {
                JWT_PROVIDER: provider,
                JWT_QUERY_PROVIDER: {**provider, "from_params": [TOKEN_QUERY_PARAMETER]},
            },
            "requirement_map": {
                name: {"provider_name": name} for name in (JWT_PROVIDER, JWT_QUERY_PROVIDER)
            },
        },
    }
    token_exchange = _token_exchange_filter(topology)
    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": TRANSCODER,
            "proto_descriptor": str(files.descriptor_set),
            # Read from the descriptor set every copy Envoy reads is made from.
            "services": grpc_services(
                protos.DESCRIPTOR_SET, [r.service for r in edge.routes if r.transcode]
            ),
            "convert_grpc_status": True,
            "print_options": {"always_print_primitive_fields": True},
        },
    }
    # Last before the router: it sees the upstream's own responses (a transcoded gRPC error is
    # turned into JSON by the transcoder after it).
    # Right after admission: an oversized request costs nothing downstream.
    header_limits = _lua_filter(REQUEST_HEADERS_LUA)
    upstream_problems = _lua_filter(UPSTREAM_PROBLEM_LUA)
    # Before the transcoder, so after it on the way back: it sees what the client would get,
    # a transcoded gRPC call's JSON status included.
    denials = _lua_filter(MESH_DENIAL_LUA)
    router = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}
    # The rate limit after jwt_authn, whose verified sub it counts by, and before the token
    # exchange: a request over its limit costs auth nothing. None where no rate-limit service
    # runs (Kubernetes, so far).
    limit = [_ratelimit_filter()] if placement.runs(RATELIMIT) else []
    # Before everything: a request over the limit costs neither a JWT check nor a call.
    admission = _admission_filter(topology)
    return [
        admission, header_limits, jwt_authn, *limit, token_exchange, denials, transcoder,
        upstream_problems, router,
    ]  # fmt: skip


RETRY_AFTER = {
    "header": {"key": "retry-after", "value": "1"},
    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
}


def _local_reply() -> dict[str, Any]:
    problem = {"json_format": PROBLEM_BODY, "content_type": "application/problem+json",
               "formatters": FORMATTERS}  # fmt: skip
    return {
        "mappers": [
            # A refusal of the token exchange is auth's own problem document (or the exchange's
            # 503 one): keep it as it is.
            {"filter": {"metadata_filter": {
                "matcher": {"filter": EDGE_METADATA, "path": [{"key": "auth_refused"}],
                            "value": {"bool_match": True}},
                "match_if_key_not_found": False,
            }}},
            # The edge's only other own 403 is jwt_authn refusing a token's audience: a token
            # that is not for this API is not a valid credential here, so 401 like every other.
            {
                "filter": {"status_code_filter": {"comparison": {
                    "op": "EQ",
                    "value": {"default_value": 403, "runtime_key": "edge_jwt_audience_status"},
                }}},
                "status_code": 401,
                "body_format_override": problem,
            },
            # The header limits' 431, the Lua filter's or a codec's (HTTP/1 only: HTTP/2 and
            # HTTP/3 reset the stream). A codec refuses before the path is known: instance null.
            {
                "filter": {"status_code_filter": {"comparison": {
                    "op": "EQ",
                    "value": {"default_value": 431, "runtime_key": "edge_headers_too_large_status"},
                }}},
                "body_format_override": {
                    "json_format": HEADERS_TOO_LARGE_PROBLEM,
                    "content_type": "application/problem+json",
                    "formatters": FORMATTERS,
                },
            },
            # The edge's own 503s (over the admission limit, no healthy upstream) say when
            # to try again.
            {
                "filter": {"status_code_filter": {"comparison": {
                    "op": "EQ",
                    "value": {"default_value": 503, "runtime_key": "edge_unavailable_status"},
                }}},
                "headers_to_add": [RETRY_AFTER],
                "body_format_override": problem,
            },
            {
                "filter": {"status_code_filter": {"comparison": {
                    "op": "GE",
                    "value": {"default_value": 400, "runtime_key": "edge_problem_min_status"},
                }}},
                "body_format_override": problem,
            },
        ]
    }  # fmt: skip


def _hcm(topology: Topology, placement: Placement, files: EdgeFiles, stat_prefix: str, *,
         http3: bool = False, alt_svc: bool = False) -> dict[str, Any]:  # fmt: skip
    host: dict[str, Any] = {"name": "shopmesh", "domains": ["*"], "routes": routes(topology)}
    if placement.runs(RATELIMIT):
        host["rate_limits"] = rate_limits()
    route_config: dict[str, Any] = {
        "name": "edge",
        "virtual_hosts": [host],
        "request_headers_to_remove": list(INTERNAL_HEADERS),
        "request_headers_to_add": [CLIENT_ADDRESS],
    }
    if alt_svc:
        route_config["response_headers_to_add"] = [{"header": {
            "key": "alt-svc", "value": f'h3=":{topology.edge.https_port}"; ma=86400'}}]  # fmt: skip
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": stat_prefix,
        "codec_type": "HTTP3" if http3 else "AUTO",
        "use_remote_address": True,
        "max_request_headers_kb": CODEC_MAX_REQUEST_HEADERS_KB,
        "common_http_protocol_options": {"max_headers_count": CODEC_MAX_HEADERS_COUNT},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "access_log": [{"name": "stdout", "typed_config": {
            "@type": STDOUT_LOG,
            "log_format": {"json_format": ACCESS_LOG_FORMAT, "formatters": FORMATTERS}}}],
        "route_config": route_config,
        "local_reply_config": _local_reply(),
        "http_filters": http_filters(topology, placement, files),
        "tracing": tracer(topology, placement).http_connection_manager(
            topology.trace_sample_percent
        ),
    }  # fmt: skip
    if http3:
        hcm["http3_protocol_options"] = {}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _tls(files: EdgeFiles, alpn: list[str]) -> dict[str, Any]:
    return {
        "common_tls_context": {
            "alpn_protocols": alpn,
            "tls_certificates": [{
                "certificate_chain": {"filename": str(files.server_cert)},
                "private_key": {"filename": str(files.server_key)},
            }],
        }
    }  # fmt: skip


# The balancer's PROXY protocol v2 header; connections straight to an instance's own port (the
# tests that address one edge) come without it and keep their own peer address.
PROXY_PROTOCOL_FILTER = {
    "name": "envoy.filters.listener.proxy_protocol",
    "typed_config": {"@type": PROXY_PROTOCOL, "allow_requests_without_proxy_protocol": True},
}


def envoy_config(
    topology: Topology, placement: Placement, files: EdgeFiles, edge: EdgeInstance
) -> dict[str, Any]:
    host = placement.listen(edge.id)
    plain = {
        "name": "http",
        "address": _socket(host, edge.http_port),
        "listener_filters": [PROXY_PROTOCOL_FILTER],
        "filter_chains": [{"filters": [_hcm(topology, placement, files, "edge_http")]}],
    }
    tls = {
        "name": "https",
        "address": _socket(host, edge.https_port),
        "listener_filters": [PROXY_PROTOCOL_FILTER],
        "filter_chains": [{
            "filters": [_hcm(topology, placement, files, "edge_https", alt_svc=True)],
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": TLS_CONTEXT, **_tls(files, ["h2", "http/1.1"])}},
        }],
    }  # fmt: skip
    # The public port itself, shared by every edge (Envoy sets SO_REUSEPORT on it).
    quic = {
        "name": "http3",
        "address": _socket(host, topology.edge.https_port, "UDP"),
        "udp_listener_config": {"quic_options": {}},
        "filter_chains": [{
            "filters": [_hcm(topology, placement, files, "edge_http3", http3=True)],
            "transport_socket": {"name": "envoy.transport_sockets.quic", "typed_config": {
                "@type": QUIC_TRANSPORT, "downstream_tls_context": _tls(files, ["h3"])}},
        }],
    }  # fmt: skip
    metrics = edge_metrics.listener(_socket(host, edge.metrics_port))
    return {
        "node": {"id": edge.id, "cluster": "edge"},
        "admin": {"address": envoy_admin.address(files.admin_socket)},
        "memory_allocator_manager": envoy_memory.allocator_manager(),
        "overload_manager": envoy_memory.overload_manager(topology.edge.max_heap_mb),
        "static_resources": {
            "listeners": [plain, tls, quic, metrics],
            "clusters": [_cluster(topology, u.service, u.local_bind_port) for u in edge.upstreams]
            + ([_ratelimit_cluster(topology, placement)] if placement.runs(RATELIMIT) else [])
            + [
                tracer(topology, placement).cluster(),
                edge_metrics.admin_cluster(files.admin_socket),
            ],
        },
    }


# How long a draining edge (`mesh stop edge-1`) keeps its listeners: every response in that
# time closes its connection (HTTP/1.1 `connection: close`, an HTTP/2 or HTTP/3 GOAWAY), so
# clients move to the other edge between requests, never in the middle of one.
DRAIN_TIME_S = 5


def edge_argv(
    topology: Topology, envoy_bin: Path, config_file: Path, edge: EdgeInstance
) -> list[str]:
    """An edge instance's Envoy command line (natively and in compose)."""
    return [
        str(envoy_bin),
        "-c",
        str(config_file),
        "--disable-hot-restart",
        "--log-level",
        "warn",
        "--service-node",
        edge.id,
        "--service-cluster",
        "edge",
        "--concurrency",
        str(topology.edge.workers),
        "--drain-time-s",
        str(DRAIN_TIME_S),
        "--drain-strategy",
        "immediate",
    ]
