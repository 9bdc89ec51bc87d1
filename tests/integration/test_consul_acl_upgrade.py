"""A state dir from before Consul's ACLs, or from before its HTTPS API, comes up with them, and
every start puts the policies and tokens back as the code has them. One Consul server and the
client agent, started by the runtime's own process specs on free ports in a temporary state dir
(never the topology's: a mesh may be running): first as an earlier version ran them (no `acl` in
their configs, no tokens made; or their API on plain HTTP), then as this one does."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from mesh.components.consul_acl import MANAGEMENT, OPERATOR, service_token
from mesh.placement import NativePlacement
from mesh.runtime import consul, consul_acl, process
from mesh.runtime.paths import StateDir
from mesh.runtime.process import ProcessSpec
from mesh.runtime.provision import CONSUL
from mesh.runtime.tls import consul_ca
from mesh.topology import ConsulPorts, ConsulServer, Topology, load
from tests.ratelimit_processes import binaries, free_port
from tests.support import api_answers_plain_http

KEY = "shopmesh/faults/orders"


def without_acl(make: Any) -> Any:
    def config(*args: Any) -> dict[str, Any]:
        generated: dict[str, Any] = make(*args)
        generated.pop("acl")
        return generated

    return config


def on_plain_http(make: Any) -> Any:
    """The config as before Consul's HTTPS API: the same port, plain HTTP."""

    def config(*args: Any) -> dict[str, Any]:
        generated: dict[str, Any] = make(*args)
        ports = generated["ports"]
        ports["http"], ports["https"] = ports["https"], -1
        del generated["tls"]["https"]
        return generated

    return config


def plain_addr(https_addr: str) -> str:
    return https_addr.replace("https://", "http://", 1)


def verified(state: StateDir) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(consul_ca(state)))


@pytest.fixture
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, StateDir]]:
    topology = replace(
        load(),
        consul_ports=ConsulPorts(*(free_port() for _ in range(3))),
        consul_servers=(ConsulServer(1, free_port(), free_port(), free_port()),),
    )
    state = StateDir(tmp_path_factory.mktemp("consul-acl") / "state")
    state.ensure()
    yield topology, state
    for name in ("consul", topology.consul_servers[0].name):
        process.stop(state, name, timeout=30)


def consul_specs(topology: Topology, state: StateDir) -> list[ProcessSpec]:
    placement = NativePlacement.of(topology)
    consul_bin = binaries(CONSUL)["consul"]
    return [
        *consul.server_specs(topology, placement, state, consul_bin),
        consul.agent_spec(topology, placement, state, consul_bin),
    ]


def run(specs: list[ProcessSpec], state: StateDir) -> None:
    for spec in specs:
        process.start(state, spec)
        process.wait_ready(state, spec)


def stop(specs: list[ProcessSpec], state: StateDir) -> None:
    for spec in reversed(specs):
        process.stop(state, spec.name, timeout=30)


def management(topology: Topology, state: StateDir) -> httpx.Client:
    server = topology.consul_servers[0]
    token = consul_acl.secret(state, MANAGEMENT)
    return httpx.Client(
        base_url=NativePlacement.of(topology).consul_server_addr(server),
        headers={"X-Consul-Token": token},
        timeout=5,
        verify=verified(state),
    )


def test_a_cluster_from_before_acls_comes_up_with_them_and_keeps_its_data(
    small_cluster: tuple[Topology, StateDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology, state = small_cluster
    agent = topology.consul_http_addr
    with monkeypatch.context() as earlier:
        earlier.setattr(consul, "server_config", without_acl(consul.server_config))
        earlier.setattr(consul, "agent_config", without_acl(consul.agent_config))
        earlier.setattr(consul_acl, "ensure_acls", lambda *args, **kwargs: None)
        specs = consul_specs(topology, state)
        run(specs, state)
        with httpx.Client(base_url=agent, verify=verified(state), timeout=5) as earlier_api:
            assert earlier_api.put(f"/v1/kv/{KEY}", content="{}").status_code == 200
        stop(specs, state)

    specs = consul_specs(topology, state)
    run(specs, state)
    with httpx.Client(base_url=agent, verify=verified(state), timeout=5) as api:
        assert api.get(f"/v1/kv/{KEY}").status_code == 403
        assert api.put(f"/v1/kv/{KEY}", content="{}").status_code == 403
        operator = {"X-Consul-Token": consul_acl.secret(state, OPERATOR)}
        kept = api.get(f"/v1/kv/{KEY}", headers=operator)
        assert kept.status_code == 200, "the earlier data is all there"
        orders = {"X-Consul-Token": consul_acl.secret(state, service_token("orders"))}
        own = {"ID": "orders-upgrade", "Name": "orders", "Port": 1}
        resp = api.put("/v1/agent/service/register", json=own, headers=orders)
        assert resp.status_code == 200, resp.text


def test_a_cluster_from_before_the_https_api_comes_up_serving_https_only_and_keeps_its_data(
    small_cluster: tuple[Topology, StateDir], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology, state = small_cluster
    placement = NativePlacement.of(topology)
    agent = placement.consul_http_addr(topology)
    operator = {"X-Consul-Token": consul_acl.secret(state, OPERATOR)}
    with monkeypatch.context() as earlier:
        earlier.setattr(consul, "server_config", on_plain_http(consul.server_config))
        earlier.setattr(consul, "agent_config", on_plain_http(consul.agent_config))
        for method in ("consul_http_addr", "consul_server_addr"):
            https = getattr(NativePlacement, method)
            earlier.setattr(NativePlacement, method, lambda *a, https=https: plain_addr(https(*a)))
        specs = consul_specs(topology, state)
        run(specs, state)
        written = httpx.put(
            f"{plain_addr(agent)}/v1/kv/{KEY}", content="{}", headers=operator, timeout=5
        )
        assert written.status_code == 200, written.text
        stop(specs, state)
    certificates = {
        path.name: path.read_bytes() for path in (state.secrets / "consul-tls").glob("*.pem")
    }

    specs = consul_specs(topology, state)
    run(specs, state)
    with httpx.Client(verify=verified(state), timeout=5) as api:
        kept = api.get(f"{agent}/v1/kv/{KEY}", headers=operator)
        assert kept.status_code == 200, "the earlier data is all there"
        for addr in (agent, placement.consul_server_addr(topology.consul_servers[0])):
            assert not api_answers_plain_http(addr), f"{addr} still answers plain HTTP"
            assert api.get(f"{addr}/v1/status/leader").json(), f"{addr} answers over HTTPS"
    kept_certificates = {
        path.name: path.read_bytes() for path in (state.secrets / "consul-tls").glob("*.pem")
    }
    assert kept_certificates == certificates, "the agents' certificates already had the names"


def test_every_start_puts_back_a_policy_or_token_changed_by_hand(
    small_cluster: tuple[Topology, StateDir],
) -> None:
    topology, state = small_cluster
    run(consul_specs(topology, state), state)
    placement = NativePlacement.of(topology)
    with management(topology, state) as admin:
        tokens_before = {t["AccessorID"] for t in admin.get("/v1/acl/tokens").json()}
        policy = admin.get("/v1/acl/policy/name/shopmesh-service-orders").json()
        widened = {"Name": policy["Name"], "Rules": 'key_prefix "" { policy = "write" }'}
        assert admin.put(f"/v1/acl/policy/{policy['ID']}", json=widened).status_code == 200
        orders_secret = consul_acl.secret(state, service_token("orders"))
        token = admin.get("/v1/acl/token/self", headers={"X-Consul-Token": orders_secret}).json()
        stripped = {"AccessorID": token["AccessorID"], "Description": "changed", "Policies": []}
        assert admin.put(f"/v1/acl/token/{token['AccessorID']}", json=stripped).status_code == 200

        consul_acl.ensure_acls(topology, placement, state)

        assert {t["AccessorID"] for t in admin.get("/v1/acl/tokens").json()} == tokens_before
        restored = admin.get(f"/v1/acl/policy/{policy['ID']}").json()
        assert restored["Rules"] == policy["Rules"]
        again = admin.get(f"/v1/acl/token/{token['AccessorID']}").json()
        assert again["SecretID"] == orders_secret, "the holders' files stay valid"
        assert [p["Name"] for p in again["Policies"]] == ["shopmesh-service-orders"]
        assert again["ServiceIdentities"] == [{"ServiceName": "orders"}]
