"""The edge turns the errors the mesh itself makes behind it into problem documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mesh.components import edge
from mesh.components.edge import EdgeFiles, envoy_config
from mesh.placement import NativePlacement
from mesh.runtime import protos
from mesh.topology import load

FILES = EdgeFiles(
    Path("/certs/edge.pem"),
    Path("/certs/edge-key.pem"),
    protos.DESCRIPTOR_SET,
    Path("/state/admin/edge-1.sock"),
)


def http_filters() -> list[dict]:
    (https,) = [
        listener
        for listener in envoy_config(
            load(), NativePlacement.of(load()), FILES, load().edge.instances[0]
        )["static_resources"]["listeners"]
        if listener["name"] == "https"
    ]
    return https["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def position_of_lua(source: str) -> int:
    sources = [
        f["typed_config"].get("default_source_code", {}).get("inline_string")
        for f in http_filters()
    ]
    return sources.index(source)


def position_of(short_name: str) -> int:
    return [f["name"].rsplit(".", 1)[1] for f in http_filters()].index(short_name)


def test_the_mesh_denial_filter_sees_responses_after_the_transcoder_has_made_them_json() -> None:
    # Response filters run in reverse order: the one before the transcoder sees its output.
    assert position_of_lua(edge.MESH_DENIAL_LUA) < position_of("grpc_json_transcoder")


def test_upstream_5xx_problems_still_see_the_raw_upstream_response() -> None:
    assert position_of("grpc_json_transcoder") < position_of_lua(edge.UPSTREAM_PROBLEM_LUA)
    assert position_of_lua(edge.UPSTREAM_PROBLEM_LUA) == position_of("router") - 1


def lua_long_string(name: str) -> str:
    match = re.search(rf"local {name} = \[\[(.*?)\]\]", edge.MESH_DENIAL_LUA)
    assert match, f"no `local {name} = [[...]]` in the mesh denial Lua"
    return match.group(1)


def test_the_mesh_denial_is_a_403_problem_document() -> None:
    problem = json.loads(lua_long_string("problem"))
    assert problem == edge.MESH_DENIAL_PROBLEM
    assert problem["status"] == 403
    assert problem["type"] == "/problems/forbidden-by-mesh"
    assert "intentions" in problem["detail"]


def test_only_a_non_problem_403_carrying_envoys_rbac_text_is_rewritten() -> None:
    lua = edge.MESH_DENIAL_LUA
    assert lua_long_string("denial") == "RBAC: access denied"
    assert 'headers:get(":status") ~= "403"' in lua
    assert 'string.find(content_type, "application/problem+json", 1, true) then return end' in lua
