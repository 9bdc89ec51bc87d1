from __future__ import annotations

from mesh.runtime import edge
from mesh.topology import load


def test_every_route_in_the_topology_becomes_an_envoy_route_to_its_sidecar_upstream() -> None:
    topology = load()
    config = edge.envoy_config(topology)

    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {
        "address": topology.bind_host,
        "port_value": topology.edge.http_port,
    }
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for route in topology.edge.routes:
        match = next(r for r in routes if r["match"].get("path_separated_prefix") == route.prefix)
        cluster = clusters[match["route"]["cluster"]]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"]["port_value"] == route.local_bind_port


def test_edge_local_replies_are_problem_json() -> None:
    hcm = edge.envoy_config(load())["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]
    body = hcm["local_reply_config"]["body_format"]
    assert body["content_type"] == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(body["json_format"])


def test_edge_registration_declares_its_sidecar_upstreams() -> None:
    topology = load()
    reg = edge.registration(topology)
    upstreams = reg["Connect"]["SidecarService"]["Proxy"]["Upstreams"]
    assert {(u["DestinationName"], u["LocalBindPort"]) for u in upstreams} == {
        (u.service, u.local_bind_port) for u in topology.edge.upstreams
    }
    assert reg["Connect"]["SidecarService"]["Address"] == topology.bind_host
