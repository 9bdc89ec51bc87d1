from __future__ import annotations

import json
from pathlib import Path

from mesh.components import edge_metrics, ratelimit
from mesh.components.edge import (
    ADMISSION,
    CLIENT_ADDRESS_HEADER,
    HTTP_OPTIONS_EXTENSION,
    RATELIMIT_CLUSTER,
    UPSTREAM_IDLE_TIMEOUT,
    EdgeFiles,
    cluster_name,
    envoy_config,
    issuer,
)
from mesh.placement import NativePlacement
from mesh.runtime import protos
from mesh.topology import load
from services.common import client_address

NATIVE = NativePlacement.of(load())
FILES = EdgeFiles(
    Path("/certs/edge.pem"),
    Path("/certs/edge-key.pem"),
    protos.DESCRIPTOR_SET,
    Path("/state/admin/edge-1.sock"),
)
# The second edge: what holds for it holds for the first (the same generator, other ports).
EDGE = load().edge.instances[1]


def listeners() -> dict[str, dict]:
    """The listeners of clients' requests (not the one of /ready and /metrics)."""
    config = envoy_config(load(), NATIVE, FILES, EDGE)
    return {
        listener["name"]: listener
        for listener in config["static_resources"]["listeners"]
        if listener["name"] != edge_metrics.STAT_PREFIX
    }


def route_prefix(route: dict) -> str | None:
    """The prefix a route of the table matches (`/`, the catch-all, is a plain prefix)."""
    match = route["match"]
    return match.get("path_separated_prefix", match.get("prefix"))


def test_the_catch_all_route_to_the_front_end_comes_last() -> None:
    routes = hcm(listeners()["http"])["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["route"]["cluster"] == "mesh-web"
    assert sum(route_prefix(r) == "/" for r in routes) == 1


def hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_the_admin_api_is_on_an_owner_only_socket_and_only_ready_and_metrics_reach_it() -> None:
    config = envoy_config(load(), NATIVE, FILES, EDGE)
    assert config["admin"]["address"] == {"pipe": {"path": str(FILES.admin_socket), "mode": 0o600}}
    (metrics,) = [
        listener
        for listener in config["static_resources"]["listeners"]
        if listener["name"] == edge_metrics.STAT_PREFIX
    ]
    assert metrics["address"]["socket_address"]["port_value"] == EDGE.metrics_port
    routes = hcm(metrics)["route_config"]["virtual_hosts"][0]["routes"]
    to_admin = {
        (r["match"]["path"], r["route"].get("prefix_rewrite"))
        for r in routes
        if r.get("route", {}).get("cluster") == edge_metrics.ADMIN_CLUSTER
    }
    assert to_admin == {("/ready", None), ("/metrics", "/stats/prometheus")}
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert all(r["match"]["headers"] == get for r in routes if "route" in r)
    assert routes[-1] == {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    (admin,) = [
        c for c in config["static_resources"]["clusters"] if c["name"] == edge_metrics.ADMIN_CLUSTER
    ]
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": str(FILES.admin_socket)}}


def test_plain_tls_and_quic_listeners_come_from_the_topology() -> None:
    topology = load()
    found = listeners()
    assert found["http"]["address"]["socket_address"]["port_value"] == EDGE.http_port
    assert found["https"]["address"]["socket_address"]["port_value"] == EDGE.https_port
    # QUIC on the public port itself, which every edge binds (SO_REUSEPORT).
    quic = found["http3"]["address"]["socket_address"]
    assert (quic["port_value"], quic["protocol"]) == (topology.edge.https_port, "UDP")
    tls = found["https"]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert hcm(found["http3"])["codec_type"] == "HTTP3"


def test_the_tls_listener_advertises_http3() -> None:
    route_config = hcm(listeners()["https"])["route_config"]
    (alt_svc,) = route_config["response_headers_to_add"]
    assert alt_svc["header"]["key"] == "alt-svc"
    assert alt_svc["header"]["value"].startswith(f'h3=":{load().edge.https_port}"')


def test_every_route_goes_to_its_sidecar_upstream_with_the_right_auth() -> None:
    topology = load()
    config = envoy_config(topology, NATIVE, FILES, EDGE)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    routes = hcm(listeners()["http"])["route_config"]["virtual_hosts"][0]["routes"]
    ports = {u.service: u.local_bind_port for u in EDGE.upstreams}
    for route in topology.edge.routes:
        match = next(r for r in routes if route_prefix(r) == route.prefix)
        cluster = clusters[match["route"]["cluster"]]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["port_value"] == ports[route.service]
        jwt = match["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]
        assert jwt.get("disabled", False) == (route.auth == "none"), route.prefix
        if route.websocket:
            assert match["route"]["timeout"] == "0s"


def test_every_pool_of_the_edge_closes_its_idle_connections_and_keeps_its_protocol() -> None:
    topology = load()
    config = envoy_config(topology, NATIVE, FILES, EDGE)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    websocket = {route.service for route in topology.edge.routes if route.websocket}
    http2 = {cluster_name(u.service): u.service not in websocket
             for u in EDGE.upstreams} | {RATELIMIT_CLUSTER: True}  # fmt: skip
    assert websocket == {"notifications"}
    for name, speaks_http2 in http2.items():
        options = clusters[name]["typed_extension_protocol_options"][HTTP_OPTIONS_EXTENSION]
        assert options["common_http_protocol_options"]["idle_timeout"] == UPSTREAM_IDLE_TIMEOUT
        assert ("http2_protocol_options" in options["explicit_http_config"]) == speaks_http2, name


def test_a_websocket_alone_is_not_counted_by_the_admission_limit() -> None:
    routes = hcm(listeners()["http"])["route_config"]["virtual_hosts"][0]["routes"]
    for route in load().edge.routes:
        match = next(r for r in routes if route_prefix(r) == route.prefix)
        admission = match["typed_per_filter_config"].get(ADMISSION, {})
        assert admission.get("disabled", False) == route.websocket, route.prefix


def test_the_admission_limit_follows_the_topologys_latency_target() -> None:
    admission = load().edge.admission
    for name, listener in listeners().items():
        gradient = http_filter(listener, "adaptive_concurrency")["gradient_controller_config"]
        min_rtt = gradient["min_rtt_calc_params"]
        assert min_rtt["fixed_value"] == f"{admission.latency_ms / 1000:g}s", name
        assert min_rtt["min_concurrency"] == admission.min_concurrency, name


def test_filters_run_admission_sizes_jwt_rate_limit_exchange_denials_transcoder_problems_router(
) -> None:  # fmt: skip
    for name, listener in listeners().items():
        names = [f["name"].rsplit(".", 1)[1] for f in hcm(listener)["http_filters"]]
        assert names == [
            "adaptive_concurrency", "lua", "jwt_authn", "ratelimit", "token_exchange", "lua",
            "grpc_json_transcoder", "lua", "router",
        ], name  # fmt: skip


def http_filter(listener: dict, name: str) -> dict:
    filters = hcm(listener)["http_filters"]
    return next(f for f in filters if f["name"] == f"envoy.filters.http.{name}")["typed_config"]


def jwt_authn() -> dict:
    return http_filter(listeners()["https"], "jwt_authn")


def test_jwt_providers_trust_only_auth_as_issuer_for_the_api_audience() -> None:
    for provider in jwt_authn()["providers"].values():
        assert provider["issuer"] == issuer(load(), NATIVE)
        assert provider["audiences"] == ["shopmesh-api"]


def test_only_the_websocket_route_takes_a_token_from_the_query_string() -> None:
    providers = jwt_authn()["providers"]
    assert "from_params" not in providers["shopmesh"]
    assert providers["shopmesh-query"]["from_params"] == ["access_token"]
    routes = hcm(listeners()["https"])["route_config"]["virtual_hosts"][0]["routes"]
    by_route = {}
    for route in routes:
        jwt = route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]
        if not jwt.get("disabled"):
            prefix = route["match"].get("path_separated_prefix", route["match"].get("prefix"))
            by_route[prefix] = jwt["requirement_name"]
    assert by_route.pop("/notifications/ws") == "shopmesh-query"
    assert set(by_route.values()) == {"shopmesh"}


def test_access_logs_and_problems_leave_the_query_string_out() -> None:
    access_log = hcm(listeners()["https"])["access_log"][0]["typed_config"]
    text = json.dumps(access_log) + json.dumps(hcm(listeners()["https"])["local_reply_config"])
    assert "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%" in text
    assert "%REQ(:PATH)%" not in text and "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" not in text


def test_every_listener_asks_the_one_rate_limit_service_and_counts_nothing_itself() -> None:
    topology = load()
    config = envoy_config(topology, NATIVE, FILES, EDGE)
    assert "local_ratelimit" not in json.dumps(config)
    for name, listener in listeners().items():
        limit = http_filter(listener, "ratelimit")
        assert limit["domain"] == ratelimit.DOMAIN == ratelimit.service_config(topology)["domain"]
        service = limit["rate_limit_service"]
        assert service["transport_api_version"] == "V3"
        assert service["grpc_service"]["envoy_grpc"]["cluster_name"] == "ratelimit", name
        assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
        assert limit["rate_limited_status"] == {"code": "TooManyRequests"}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    service_cluster = clusters["ratelimit"]
    endpoint = service_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": topology.bind_host,
        "port_value": topology.ratelimit_ports.grpc,
        "protocol": "TCP",
    }
    options = service_cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]


def test_a_rate_limit_outage_lets_requests_through_quickly() -> None:
    limit = http_filter(listeners()["https"], "ratelimit")
    assert limit["failure_mode_deny"] is False
    assert float(limit["timeout"].removesuffix("s")) <= 0.5


def test_requests_are_counted_per_client_address_and_per_verified_user() -> None:
    for listener in listeners().values():
        (host,) = hcm(listener)["route_config"]["virtual_hosts"]
        per_ip, per_user = (rule["actions"] for rule in host["rate_limits"])
        assert per_ip == [{"remote_address": {}}]
        (metadata,) = per_user
        assert metadata == {"metadata": {
            "descriptor_key": ratelimit.PER_USER_KEY,
            "metadata_key": {"key": "envoy.filters.http.jwt_authn",
                             "path": [{"key": "jwt_payload"}, {"key": "sub"}]},
            "source": "DYNAMIC",
            # Public routes (no token): counted per address only.
            "skip_if_absent": True,
        }}  # fmt: skip
        assert all("rate_limits" not in route.get("route", {}) for route in host["routes"])
    # The keys the edge sends are the ones the service has rules for.
    rules = {rule["key"] for rule in ratelimit.service_config(load())["descriptors"]}
    assert rules == {"remote_address", ratelimit.PER_USER_KEY}


def test_transcoder_serves_the_grpc_services_of_transcoded_routes() -> None:
    transcoder = http_filter(listeners()["http"], "grpc_json_transcoder")
    assert sorted(transcoder["services"]) == [
        "shopmesh.payments.v1.PaymentService",
        "shopmesh.users.v1.UserService",
    ]


def test_edge_local_replies_are_problem_json_except_auths_own_denials() -> None:
    mappers = hcm(listeners()["http"])["local_reply_config"]["mappers"]
    matcher = mappers[0]["filter"]["metadata_filter"]["matcher"]
    assert (matcher["filter"], matcher["path"]) == ("shopmesh.edge", [{"key": "auth_refused"}])
    assert "body_format_override" not in mappers[0]
    assert mappers[1]["status_code"] == 401
    body = mappers[2]["body_format_override"]
    assert body["content_type"] == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(body["json_format"])


def test_every_edge_listener_samples_the_topologys_share_of_requests_to_jaeger_as_edge() -> None:
    topology = load()
    config = envoy_config(topology, NATIVE, FILES, EDGE)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    exported_to = set()
    for name, listener in listeners().items():
        tracing = hcm(listener)["tracing"]
        assert tracing["random_sampling"] == {"value": topology.trace_sample_percent}, name
        provider = tracing["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert provider["typed_config"]["service_name"] == "edge"
        exported_to.add(provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"])
    (cluster,) = exported_to
    otlp = clusters[cluster]
    endpoint = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": topology.bind_host,
        "port_value": topology.jaeger.ports.otlp_grpc,
    }
    options = otlp["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]


def test_the_edges_span_is_named_after_its_route() -> None:
    routes = hcm(listeners()["http"])["route_config"]["virtual_hosts"][0]["routes"]
    orders = next(r for r in routes if r["match"].get("path_separated_prefix") == "/orders")
    assert orders["decorator"] == {"operation": "orders /orders", "propagate": False}


def test_the_token_exchange_is_off_on_public_routes_and_carries_the_topologys_cache() -> None:
    topology = load()
    filters = hcm(listeners()["https"])["http_filters"]
    exchange = next(f for f in filters if f["name"] == "shopmesh.token_exchange")
    source = exchange["typed_config"]["default_source_code"]["inline_string"]
    cache = topology.edge.token_cache
    assert f"local MAX_AGE_S = {cache.max_age_s}\n" in source
    assert f"local MAX_ENTRIES = {cache.max_entries}\n" in source
    assert 'local AUTH_CLUSTER = "mesh-auth"\n' in source
    routes = hcm(listeners()["https"])["route_config"]["virtual_hosts"][0]["routes"]
    for route in topology.edge.routes:
        found = next(r for r in routes if route_prefix(r) == route.prefix)
        off = found["typed_per_filter_config"].get("shopmesh.token_exchange", {}).get("disabled")
        assert bool(off) == (route.auth == "none"), route.prefix


def test_every_routed_request_carries_the_client_address_the_edge_saw_whatever_the_client_sent():
    for listener in listeners().values():
        route_config = hcm(listener)["route_config"]
        assert route_config["request_headers_to_add"] == [{
            "header": {"key": CLIENT_ADDRESS_HEADER,
                       "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }]  # fmt: skip
    # The name the services read it by.
    assert CLIENT_ADDRESS_HEADER == client_address.CLIENT_ADDRESS_HEADER


def test_the_jwks_cache_is_the_topologys_and_auth_is_told_it() -> None:
    for listener in listeners().values():
        jwt_authn = next(
            f for f in hcm(listener)["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"
        )
        for provider in jwt_authn["typed_config"]["providers"].values():
            assert provider["remote_jwks"]["cache_duration"] == f"{load().edge.jwks_cache_s}s"


def test_the_edges_overload_manager_watches_its_heap_against_the_topologys_limit() -> None:
    topology = load()
    overload = envoy_config(topology, NATIVE, FILES, EDGE)["overload_manager"]
    (monitor,) = overload["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.fixed_heap"
    assert monitor["typed_config"]["max_heap_size_bytes"] == str(topology.edge.max_heap_mb << 20)
    thresholds = {
        action["name"].removeprefix("envoy.overload_actions."): trigger["threshold"]["value"]
        for action in overload["actions"]
        for trigger in action["triggers"]
        if trigger["name"] == monitor["name"]
    }
    assert list(thresholds) == [
        "shrink_heap",
        "stop_accepting_connections",
        "stop_accepting_requests",
    ]
    assert sorted(thresholds.values()) == list(thresholds.values()), "least drastic first"
    assert thresholds["stop_accepting_requests"] < 1
