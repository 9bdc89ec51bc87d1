"""The Consul config entries agree with the topology: protocols, and an intention per call."""

from __future__ import annotations

import hcl2

from mesh.runtime.consul import CONFIG_ENTRIES_DIR
from mesh.topology import load


def unquote(value: str) -> str:
    return value.strip('"')


def entries(kind: str) -> dict[str, dict]:
    found = {}
    for path in CONFIG_ENTRIES_DIR.glob("*.hcl"):
        with path.open() as fh:
            entry = hcl2.load(fh)
        if unquote(entry["Kind"]) == kind:
            found[unquote(entry["Name"])] = entry
    return found


def allowed_sources(destination: str) -> set[str]:
    entry = entries("service-intentions").get(destination, {"Sources": []})
    return {unquote(s["Name"]) for s in entry["Sources"] if unquote(s["Action"]) == "allow"}


def test_every_service_declares_the_protocol_the_topology_gives_it() -> None:
    defaults = entries("service-defaults")
    for service in load().services:
        assert unquote(defaults[service.name]["Protocol"]) == service.protocol, service.name


def test_everything_is_denied_unless_an_intention_allows_it() -> None:
    wildcard = entries("service-intentions")["*"]
    assert [(unquote(s["Name"]), unquote(s["Action"])) for s in wildcard["Sources"]] == [
        ("*", "deny")
    ]


def test_every_upstream_in_the_topology_has_an_allow_intention() -> None:
    topology = load()
    for service in topology.services:
        for upstream in service.upstreams:
            assert service.name in allowed_sources(upstream.service), (service.name, upstream)
    for service_name in topology.edge.services:
        assert "edge" in allowed_sources(service_name), service_name


def test_intentions_name_only_known_services() -> None:
    known = {s.name for s in load().services} | {"edge", "*"}
    for destination, entry in entries("service-intentions").items():
        assert destination in known
        assert {unquote(s["Name"]) for s in entry["Sources"]} <= known, destination
