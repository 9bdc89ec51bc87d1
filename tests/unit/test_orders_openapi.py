"""The public OpenAPI document of orders (served by the edge at /openapi/orders.yaml) lists
exactly the routes the edge passes to orders; the instance's own endpoints stay out of it."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mesh.topology import load
from services.orders import api, validation

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def routed_service(path: str) -> str | None:
    """The service the edge sends `path` to: the first route whose prefix matches on whole
    path segments (Envoy's path_separated_prefix)."""
    for route in load().edge.routes:
        if path == route.prefix or path.startswith(route.prefix + "/"):
            return route.service
    return None


def concrete(template: str) -> str:
    """A path the template matches: `/orders/{id}` becomes `/orders/x`."""
    return re.sub(r"\{[^}]+\}", "x", template)


def spec_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in validation.spec()["paths"].items()
        for method in item
        if method in METHODS
    }


def service_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the orders app serves (aiohttp adds HEAD for GET)."""
    return {(route.method, route.path) for route in api.routes if route.method != "HEAD"}


def test_the_spec_lists_every_route_the_edge_passes_to_orders_and_nothing_else() -> None:
    public = {(m, p) for m, p in service_routes() if routed_service(concrete(p)) == "orders"}
    assert public, "the edge routes nothing to orders?"
    assert spec_operations() == public


def test_the_instances_own_endpoints_are_not_in_the_public_spec() -> None:
    own = {path for _, path in service_routes() if routed_service(concrete(path)) != "orders"}
    assert own == {"/openapi.yaml"}
    assert not own & set(validation.spec()["paths"])


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_ref_resolves_and_every_component_is_used() -> None:
    spec = validation.spec()
    used = set(refs(spec))
    for ref in used:
        node: object = spec
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
    defined = {
        f"#/components/{kind}/{name}"
        for kind, entries in spec["components"].items()
        for name in entries
    }
    # Schemas may be used only by the service's own validation (validation.schema_validator).
    unused = {ref for ref in defined - used if not ref.startswith("#/components/schemas/")}
    assert not unused, f"components nothing refers to: {sorted(unused)}"
