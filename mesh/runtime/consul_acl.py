"""The state dir's Consul ACL tokens, and their policies and tokens in Consul (who holds which
and what each may do: mesh/components/consul_acl.py).

Each token's SecretID is generated (uuid4) at the first start into a file of its own under
`secrets/consul-acl/` (0600), which its holder is handed: a sidecar's `-token-file`, a service's
SHOPMESH_CONSUL_TOKEN_FILE, `consul`'s CONSUL_HTTP_TOKEN_FILE, Prometheus's credentials_file.
Each agent gets its tokens from a config file of its own there. Once the servers have a leader
`ensure_acls` creates the policies and tokens, or updates them in place, at every start.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from mesh.components.consul_acl import (
    MANAGEMENT,
    TokenSpec,
    agent_token,
    agent_tokens_config,
    tokens,
)
from mesh.placement import Placement
from mesh.runtime.paths import OWNER_ONLY_DIR, StateDir, write_private
from mesh.runtime.tls import consul_ca
from mesh.topology import Topology

TOKEN_HEADER = "X-Consul-Token"


class AclSetupFailed(RuntimeError):
    pass


def tokens_dir(state: StateDir) -> Path:
    return state.secrets / "consul-acl"


def token_file(state: StateDir, name: str) -> Path:
    return tokens_dir(state) / f"{name}.token"


def agent_config_file(state: StateDir, agent: str) -> Path:
    """The agent's secret config: its token, and on a server the management token."""
    return tokens_dir(state) / f"{agent}.json"


def secret(state: StateDir, name: str) -> str:
    _ensure_token_file(state, name)
    return token_file(state, name).read_text().strip()


def ensure_token_files(topology: Topology, placement: Placement, state: StateDir) -> None:
    """Every token's SecretID, made once and kept."""
    for name in [MANAGEMENT, *(spec.name for spec in tokens(topology, placement))]:
        _ensure_token_file(state, name)


def _ensure_token_file(state: StateDir, name: str) -> None:
    tokens_dir(state).mkdir(mode=OWNER_ONLY_DIR, exist_ok=True)
    path = token_file(state, name)
    if not path.exists():
        write_private(path, str(uuid.uuid4()))


def write_agent_config(topology: Topology, state: StateDir, agent: str) -> Path:
    """The agent's secret config file: its token; a server's also the management token."""
    servers = {server.name for server in topology.consul_servers}
    management = secret(state, MANAGEMENT) if agent in servers else None
    config = agent_tokens_config(secret(state, agent_token(agent)), management)
    path = agent_config_file(state, agent)
    write_private(path, json.dumps(config))
    return path


def ensure_acls(
    topology: Topology, placement: Placement, state: StateDir, *, timeout_s: float = 90.0
) -> None:
    """Every policy and token in Consul as the topology has them (made or updated in place),
    through a server with the management token, once the leader has set up ACLs."""
    client = _management_client(topology, placement, state, timeout_s)
    try:
        policies = {p["Name"]: p["ID"] for p in _ok(client.get("/v1/acl/policies")).json()}
        for spec in tokens(topology, placement):
            if spec.policy is not None:
                _put_policy(client, spec, policies.get(spec.policy))
            _put_token(client, topology, spec, secret(state, spec.name))
    finally:
        client.close()


def _management_client(
    topology: Topology, placement: Placement, state: StateDir, timeout_s: float
) -> httpx.Client:
    """A client of the first server that takes the management token: until the leader has
    bootstrapped ACLs (it creates the token from initial_management) every server refuses it."""
    headers = {TOKEN_HEADER: secret(state, MANAGEMENT)}
    deadline = time.monotonic() + timeout_s
    last = "no server asked yet"
    while True:
        for server in topology.consul_servers:
            client = httpx.Client(
                base_url=placement.consul_server_addr(server),
                headers=headers,
                timeout=5.0,
                verify=ssl.create_default_context(cafile=str(consul_ca(state))),
            )
            try:
                resp = client.get("/v1/acl/token/self")
                if resp.status_code == 200:
                    return client
                last = f"{server.name}: {resp.status_code} {resp.text.strip()[:120]}"
            except httpx.HTTPError as exc:
                last = f"{server.name}: {exc.__class__.__name__}"
            client.close()
        if time.monotonic() > deadline:
            raise AclSetupFailed(f"no Consul server took the management token ({last})")
        time.sleep(0.5)


def _put_policy(client: httpx.Client, spec: TokenSpec, policy_id: str | None) -> None:
    body = {"Name": spec.policy, "Description": spec.description, "Rules": spec.rules}
    path = f"/v1/acl/policy/{policy_id}" if policy_id else "/v1/acl/policy"
    _ok(client.put(path, json=body))


def token_body(topology: Topology, spec: TokenSpec) -> dict[str, Any]:
    """The token's links, the same at every start (a link dropped from the code is dropped)."""
    return {
        "Description": f"shopmesh {spec.name}: {spec.description}",
        "Policies": [{"Name": spec.policy}] if spec.policy else [],
        "ServiceIdentities": [{"ServiceName": name} for name in spec.service_identities],
        "NodeIdentities": [
            {"NodeName": node, "Datacenter": topology.datacenter} for node in spec.node_identities
        ],
    }


def _put_token(client: httpx.Client, topology: Topology, spec: TokenSpec, secret_id: str) -> None:
    """Made with the state dir's SecretID, or updated in place: its accessor is what the token
    reads of itself (any token may)."""
    body = token_body(topology, spec)
    self_resp = client.get("/v1/acl/token/self", headers={TOKEN_HEADER: secret_id})
    if self_resp.status_code == 200:
        accessor = self_resp.json()["AccessorID"]
        _ok(client.put(f"/v1/acl/token/{accessor}", json={**body, "AccessorID": accessor}))
    else:
        _ok(client.put("/v1/acl/token", json={**body, "SecretID": secret_id}))


def _ok(resp: httpx.Response) -> httpx.Response:
    if resp.status_code != 200:
        raise AclSetupFailed(
            f"{resp.request.method} {resp.request.url.path}: {resp.status_code} "
            f"{resp.text.strip()[:200]}"
        )
    return resp
