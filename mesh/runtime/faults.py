"""Fault flags in Consul KV (`shopmesh/faults/<service>`), read by services/common/faults.py."""

from __future__ import annotations

import json

from mesh.components.consul_acl import FAULT_KEY
from mesh.runtime.consul import operator_client
from mesh.runtime.paths import StateDir
from mesh.topology import Topology


class FaultError(ValueError):
    pass


def fault_value(error_rate: float, latency_ms: int, methods: list[str] | None = None) -> str:
    if not 0.0 <= error_rate <= 1.0:
        raise FaultError("--error-rate must be between 0 and 1")
    if latency_ms < 0:
        raise FaultError("--latency-ms must not be negative")
    return json.dumps(
        {"error_rate": error_rate, "latency_ms": latency_ms, "methods": list(methods or [])}
    )


def _key(topology: Topology, service: str) -> str:
    try:
        topology.service(service)
    except KeyError:
        names = ", ".join(s.name for s in topology.services)
        raise FaultError(f"unknown service {service!r}; services: {names}") from None
    return FAULT_KEY.format(service=service)


def set_fault(
    topology: Topology,
    state: StateDir,
    service: str,
    *,
    error_rate: float = 0.0,
    latency_ms: int = 0,
    methods: list[str] | None = None,
    consul_addr: str | None = None,
) -> str:
    """Through the Consul agent at `consul_addr` (by default the native mesh's)."""
    key, value = _key(topology, service), fault_value(error_rate, latency_ms, methods)
    with operator_client(consul_addr or topology.consul_http_addr, state) as client:
        client.put_kv(key, value)
    return f"{key} = {value}"


def clear_fault(
    topology: Topology, state: StateDir, service: str, consul_addr: str | None = None
) -> None:
    with operator_client(consul_addr or topology.consul_http_addr, state) as client:
        client.delete_kv(_key(topology, service))
