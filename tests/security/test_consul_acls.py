"""Consul's ACLs against the running mesh: a local account without a token, or with a token
stolen from one holder, tries what the holder may not. Each test fails if the attack succeeds
(the answer is checked, and what it would have changed is looked at with the operator token)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import pytest

from mesh.components.consul_acl import (
    MANAGEMENT,
    OPERATOR,
    PATRONI,
    PROMETHEUS,
    agent_token,
    service_token,
    tokens,
)
from mesh.placement import CONSUL
from mesh.runtime import consul_acl
from mesh.runtime.supervisor import Mesh
from mesh.runtime.tls import consul_ca
from tests.support import operator_consul

DENIED = 403


@contextmanager
def consul_as(mesh: Mesh, token: str | None) -> Iterator[httpx.Client]:
    """The client agent's HTTPS API with the named token's secret, or anonymous (None)."""
    headers = {"X-Consul-Token": consul_acl.secret(mesh.state, token)} if token else {}
    verify = ssl.create_default_context(cafile=str(consul_ca(mesh.state)))
    with httpx.Client(
        base_url=mesh.topology.consul_http_addr, headers=headers, timeout=5, verify=verify
    ) as c:
        yield c


def sees_nothing(resp: httpx.Response) -> bool:
    """Refused, or answered with ACLs' filter: an empty list or map."""
    return resp.status_code == DENIED or (resp.status_code == 200 and not resp.json())


def kv_missing(mesh: Mesh, key: str) -> bool:
    with operator_consul(mesh) as consul:
        return consul.http.get(f"/v1/kv/{key}").status_code == 404


def test_anonymous_reads_no_key_and_sees_no_service_or_node(mesh: Mesh) -> None:
    with operator_consul(mesh) as consul:
        consul.put_kv("shopmesh/faults/payments", "{}")
    try:
        with consul_as(mesh, None) as anonymous:
            assert anonymous.get("/v1/kv/shopmesh/faults/payments").status_code == DENIED
            for path in (
                "/v1/catalog/services",
                "/v1/catalog/nodes",
                "/v1/health/connect/orders",
                "/v1/agent/members",
            ):
                resp = anonymous.get(path)
                assert sees_nothing(resp), f"{path}: {resp.status_code} {resp.text[:200]}"
    finally:
        with operator_consul(mesh) as consul:
            consul.delete_kv("shopmesh/faults/payments")


def test_anonymous_cannot_set_a_fault_flag(mesh: Mesh) -> None:
    with consul_as(mesh, None) as anonymous:
        resp = anonymous.put("/v1/kv/shopmesh/faults/payments", content='{"error_rate": 1}')
    assert resp.status_code == DENIED, resp.text
    assert kv_missing(mesh, "shopmesh/faults/payments")


def test_anonymous_cannot_register_or_deregister_a_service(mesh: Mesh) -> None:
    rogue = {"ID": f"rogue-{uuid.uuid4().hex[:8]}", "Name": "payments", "Port": 1}
    with consul_as(mesh, None) as anonymous:
        assert anonymous.put("/v1/agent/service/register", json=rogue).status_code == DENIED
        resp = anonymous.put("/v1/agent/service/deregister/orders-1")
    assert resp.status_code == DENIED, resp.text
    with operator_consul(mesh) as consul:
        assert consul.agent_health("orders-1") == "passing"
        assert consul.agent_health(rogue["ID"]) == "unregistered"


def open_intentions(destination: str) -> dict[str, object]:
    """A service-intentions entry that lets every caller reach `destination`."""
    return {
        "Kind": "service-intentions",
        "Name": destination,
        "Sources": [{"Name": "*", "Action": "allow"}],
    }


@pytest.mark.parametrize("holder", [None, service_token("orders"), agent_token(CONSUL)])
def test_no_token_but_the_operators_may_rewrite_intentions_or_config_entries(
    mesh: Mesh, holder: str | None
) -> None:
    before = payments_intentions(mesh)
    with consul_as(mesh, holder) as client:
        assert client.put("/v1/config", json=open_intentions("payments")).status_code == DENIED
        defaults = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}
        assert client.put("/v1/config", json=defaults).status_code == DENIED
        exact = {"source": "evil", "destination": "payments"}
        resp = client.put("/v1/connect/intentions/exact", params=exact, json={"Action": "allow"})
    assert resp.status_code == DENIED, resp.text
    assert payments_intentions(mesh) == before


def payments_intentions(mesh: Mesh) -> object:
    with operator_consul(mesh) as consul:
        return consul.config_entry("service-intentions", "payments")


def test_a_services_token_registers_its_own_service_only(mesh: Mesh) -> None:
    """orders' token (in its instances' environment, its sidecars' -token-file) cannot pass
    for payments; it may register an orders instance (and takes it out again)."""
    suffix = uuid.uuid4().hex[:8]
    as_payments = {"ID": f"payments-rogue-{suffix}", "Name": "payments", "Port": 1}
    # Critical from the start: the mesh never routes to it while it exists.
    own = {
        "ID": f"orders-acl-test-{suffix}",
        "Name": "orders",
        "Port": 1,
        "Check": {"TTL": "30s", "Status": "critical"},
    }
    with consul_as(mesh, service_token("orders")) as orders:
        assert orders.put("/v1/agent/service/register", json=as_payments).status_code == DENIED
        sidecar = {**as_payments, "Kind": "connect-proxy", "Name": "payments-sidecar-proxy",
                   "Proxy": {"DestinationServiceName": "payments"}}  # fmt: skip
        assert orders.put("/v1/agent/service/register", json=sidecar).status_code == DENIED
        assert orders.put("/v1/agent/service/deregister/payments-1").status_code == DENIED
        assert orders.put("/v1/agent/service/register", json=own).status_code == 200
        assert orders.put(f"/v1/agent/service/deregister/{own['ID']}").status_code == 200
    with operator_consul(mesh) as consul:
        assert consul.agent_health("payments-1") == "passing"
        assert consul.agent_health(as_payments["ID"]) == "unregistered"


def test_a_service_reads_its_own_fault_flags_and_no_one_elses(mesh: Mesh) -> None:
    with operator_consul(mesh) as consul:
        consul.put_kv("shopmesh/faults/payments", "{}")
        consul.put_kv("shopmesh/faults/orders", "{}")
    try:
        with consul_as(mesh, service_token("orders")) as orders:
            assert orders.get("/v1/kv/shopmesh/faults/orders").status_code == 200
            assert orders.get("/v1/kv/shopmesh/faults/payments").status_code == DENIED
            listing = orders.get("/v1/kv/shopmesh/faults/", params={"keys": ""})
            assert listing.status_code in (DENIED, 404) or listing.json() == [
                "shopmesh/faults/orders"
            ], listing.text
            resp = orders.put("/v1/kv/shopmesh/faults/orders", content='{"error_rate": 1}')
            assert resp.status_code == DENIED, "read only, even its own"
    finally:
        with operator_consul(mesh) as consul:
            consul.delete_kv("shopmesh/faults/payments")
            consul.delete_kv("shopmesh/faults/orders")


@pytest.mark.parametrize(
    "holder", [agent_token(CONSUL), PROMETHEUS, PATRONI, service_token("payments")]
)
def test_a_token_without_key_write_cannot_set_a_fault_flag(mesh: Mesh, holder: str) -> None:
    with consul_as(mesh, holder) as client:
        resp = client.put("/v1/kv/shopmesh/faults/orders", content='{"error_rate": 1}')
    assert resp.status_code == DENIED, resp.text
    assert kv_missing(mesh, "shopmesh/faults/orders")


def test_the_operator_token_cannot_make_tokens_or_policies(mesh: Mesh) -> None:
    """The operator may do everything but ACL admin: it cannot mint itself a management token."""
    with consul_as(mesh, OPERATOR) as operator:
        management = {"Policies": [{"Name": "global-management"}]}
        assert operator.put("/v1/acl/token", json=management).status_code == DENIED
        policy = {"Name": f"rogue-{uuid.uuid4().hex[:8]}", "Rules": 'acl = "write"'}
        assert operator.put("/v1/acl/policy", json=policy).status_code == DENIED
        assert operator.get("/v1/acl/tokens").status_code == DENIED


def test_every_token_is_in_an_owner_only_file_and_in_no_config_or_log(mesh: Mesh) -> None:
    folder = consul_acl.tokens_dir(mesh.state)
    assert folder.stat().st_mode & 0o777 == 0o700
    names = [MANAGEMENT, *(spec.name for spec in tokens(mesh.topology, mesh.placement))]
    secrets = {}
    for name in names:
        path = consul_acl.token_file(mesh.state, name)
        assert path.stat().st_mode & 0o777 == 0o600, path
        secrets[name] = consul_acl.secret(mesh.state, name)
    for agent in [*(s.name for s in mesh.topology.consul_servers), CONSUL]:
        path = consul_acl.agent_config_file(mesh.state, agent)
        assert path.stat().st_mode & 0o777 == 0o600, path
    readable = [
        *mesh.state.config.rglob("*"),
        *mesh.state.logs.rglob("*"),
    ]
    for path in readable:
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        leaked = [name for name, secret in secrets.items() if secret in text]
        assert not leaked, f"{path} holds the {leaked} token"


def test_each_running_holder_is_handed_a_file_not_the_secret(mesh: Mesh) -> None:
    """No secret on a command line or in an environment variable (others read /proc/PID/cmdline;
    the environment is the process owner's, but travels to every child)."""
    secrets = {consul_acl.secret(mesh.state, s.name) for s in tokens(mesh.topology, mesh.placement)}
    for name, running in mesh.running().items():
        proc = psutil.Process(running.pid)
        for member in [proc, *proc.children(recursive=True)]:
            try:
                exposed = " ".join(member.cmdline()) + " ".join(member.environ().values())
            except psutil.NoSuchProcess:  # a short-lived child (a Postgres backend) gone
                continue
            assert not any(secret in exposed for secret in secrets), f"{name}: {member.pid}"
