"""Which edge route a path takes: the first match in the generated route table, by Envoy's rules
(`path_separated_prefix` is the prefix itself or the prefix followed by `/`, never by `:`)."""

from __future__ import annotations

import re

import pytest
from google.api import annotations_pb2

from mesh.components.edge import cluster_name, routes
from mesh.topology import load
from shopmesh.payments.v1 import payments_pb2
from shopmesh.users.v1 import users_pb2
from tests.unit.test_config_entries import entries, unquote

TRANSCODED = {"users": users_pb2, "payments": payments_pb2}


def matches(match: dict, path: str) -> bool:
    path = path.split("?", 1)[0]
    if "path" in match:
        return path == match["path"]
    if "prefix" in match:
        return path.startswith(match["prefix"])
    prefix = match["path_separated_prefix"]
    return path == prefix or path.startswith(prefix + "/")


def route_for(path: str) -> dict:
    route = next((r for r in routes(load()) if matches(r["match"], path)), None)
    assert route is not None, f"no edge route for {path}"
    return route


def needs_a_token(route: dict) -> bool:
    return not route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"].get("disabled")


def http_paths(module) -> list[str]:
    """The REST path of every method, with `x` for each path variable."""
    paths = []
    for service in module.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            template = getattr(rule, rule.WhichOneof("pattern"))
            paths.append(re.sub(r"\{[^}]*\}", "x", template))
    return paths


@pytest.mark.parametrize(
    ("service", "path"),
    [(service, path) for service, module in TRANSCODED.items() for path in http_paths(module)],
)
def test_every_rest_path_of_a_transcoded_service_reaches_it_with_a_token(service, path) -> None:
    route = route_for(path)
    assert route["route"]["cluster"] == cluster_name(service)
    assert needs_a_token(route)


def test_a_collections_custom_method_is_not_under_its_path_separated_prefix() -> None:
    assert not matches({"path_separated_prefix": "/users"}, "/users:batchCreate")
    assert route_for("/users:batchCreate")["match"] == {"prefix": "/users:"}


@pytest.mark.parametrize("path", ["/auth/credentials", "/auth/credentials?x=1"])
def test_setting_passwords_needs_a_token_at_the_edge(path) -> None:
    route = route_for(path)
    assert route["route"]["cluster"] == cluster_name("auth")
    assert needs_a_token(route)


@pytest.mark.parametrize(
    "path", ["/auth/token", "/auth/jwks", "/auth/introspect", "/auth/credentialsx"]
)
def test_the_rest_of_auth_stays_public(path) -> None:
    route = route_for(path)
    assert route["route"]["cluster"] == cluster_name("auth")
    assert not needs_a_token(route)


def test_every_hop_gives_setting_passwords_the_edge_routes_time() -> None:
    """The edge, the edge sidecar's route to auth and auth's own sidecar wait as long: Envoy's
    default of 15 s is too short for 1000 scrypt hashes (services/auth/README.md)."""
    (route,) = [r for r in load().edge.routes if r.prefix == "/auth/credentials"]
    (router_route,) = [
        r for r in entries("service-router")["auth"]["Routes"]
        if unquote(r["Match"]["HTTP"]["PathPrefix"]) == "/auth/credentials"
    ]  # fmt: skip
    request_timeout = unquote(router_route["Destination"]["RequestTimeout"])
    local_timeout_ms = entries("service-defaults")["auth"]["LocalRequestTimeoutMs"]
    assert route.timeout_ms == int(request_timeout.removesuffix("s")) * 1000 == local_timeout_ms
    assert route.timeout_ms > 15_000
