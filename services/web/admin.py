"""The admin view's adapters: block a user (users, gRPC, with the admin's token: users checks
the role itself), the mesh's health and the fault flags (this host's Consul agent, with web's
own Consul token: web checks the admin role before it writes a flag)."""

from __future__ import annotations

import base64
import json
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import grpc
from google.protobuf.json_format import MessageToDict

from services.common.auth.outgoing import bearer_metadata
from services.common.auth.principal import Principal
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.common.faults import KEY_PREFIX, MAX_LATENCY_MS
from services.common.grpc_client import upstream_channel
from shopmesh.users.v1 import users_pb2, users_pb2_grpc

USERS_DEADLINE_S = 3.0
CONSUL_TIMEOUT_S = 5.0
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
# Consul's own service, and the sidecars (their checks are their services' too).
NOT_SHOWN = frozenset({"consul"})


def mesh_health(checks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Consul's checks (`/v1/health/state/any`) as one row per service instance: its service,
    id and worst status (critical over warning over passing). Node checks (no service) and
    sidecars are left out."""
    rank = {"passing": 0, "warning": 1, "critical": 2}
    instances: dict[str, dict[str, Any]] = {}
    for check in checks:
        service, instance = check.get("ServiceName"), check.get("ServiceID")
        if (
            not service
            or not instance
            or service in NOT_SHOWN
            or service.endswith("-sidecar-proxy")
        ):
            continue
        status = str(check.get("Status", "critical"))
        row = instances.setdefault(
            instance, {"service": service, "instance": instance, "status": status}
        )
        if rank.get(status, 2) > rank.get(row["status"], 2):
            row["status"] = status
    return sorted(instances.values(), key=lambda r: (r["service"], r["instance"]))


def fault_value(payload: object) -> str:
    """The KV value for a PUT of fault flags ({"errorRate": 0..1, "latencyMs": 0..60000}),
    in the form services/common/faults.py reads; InvalidArgument for a bad field."""
    if not isinstance(payload, Mapping):
        raise InvalidArgument("body", "must be a JSON object")
    values: dict[str, float] = {}
    for field, key, high in (
        ("errorRate", "error_rate", 1.0),
        ("latencyMs", "latency_ms", float(MAX_LATENCY_MS)),
    ):
        value = payload.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise InvalidArgument(field, f"must be a number from 0 to {high:g}")
        values[key] = value
    return json.dumps({**values, "methods": []})


def service_name(raw: str) -> str:
    if SERVICE_NAME.fullmatch(raw) is None:
        raise InvalidArgument("service", "must be a service name (lower-case letters, digits, -)")
    return raw


class UsersAdmin:
    def __init__(self, port: int) -> None:
        self._channel = upstream_channel(port)
        self._stub = users_pb2_grpc.UserServiceStub(self._channel)

    async def block(self, user_id: str, reason: str, principal: Principal) -> dict[str, Any]:
        request = users_pb2.BlockUserRequest(user_id=user_id, reason=reason)
        try:
            user = await self._stub.BlockUser(
                request, timeout=USERS_DEADLINE_S, metadata=bearer_metadata(principal)
            )
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or exc.code().name
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(details) from exc
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(details) from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument("userId", details) from exc
            raise Unavailable(f"users unavailable: {code.name}") from exc
        return MessageToDict(user, always_print_fields_with_no_presence=True)

    async def close(self) -> None:
        await self._channel.close()


class ConsulAdmin:
    """This host's Consul agent, with web's token (service identity: catalog and health reads;
    and its fault-flag keys, mesh/components/consul_acl.py)."""

    def __init__(self, http_addr: str, token: str, tls: ssl.SSLContext) -> None:
        self._base = http_addr
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=CONSUL_TIMEOUT_S),
            headers={"X-Consul-Token": token},
            # Every call: the agent's HTTPS API, checked with the Consul CA.
            connector=aiohttp.TCPConnector(ssl=tls),
        )

    async def _call(self, method: str, path: str, data: str | None = None) -> Any:
        try:
            async with self._session.request(method, f"{self._base}{path}", data=data) as resp:
                if resp.status != 200:
                    raise Unavailable(f"consul answered {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"consul did not answer ({type(exc).__name__})") from exc

    async def health(self) -> list[dict[str, Any]]:
        return mesh_health(await self._call("GET", "/v1/health/state/any"))

    async def _known(self, service: str) -> str:
        services = await self._call("GET", "/v1/catalog/services")
        if service not in services or service in NOT_SHOWN or service.endswith("-sidecar-proxy"):
            raise NotFound(f"no service {service!r} in the mesh")
        return service

    async def faults(self) -> dict[str, Any]:
        """Every fault flag set now: service -> its flags."""
        try:
            async with self._session.get(
                f"{self._base}/v1/kv/{KEY_PREFIX}", params={"recurse": "true", "raw": "false"}
            ) as resp:
                if resp.status == 404:
                    return {}
                if resp.status != 200:
                    raise Unavailable(f"consul answered {resp.status}")
                entries = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"consul did not answer ({type(exc).__name__})") from exc
        return {
            entry["Key"].removeprefix(KEY_PREFIX): _decoded(entry.get("Value")) for entry in entries
        }

    async def set_fault(self, service: str, value: str) -> None:
        await self._call("PUT", f"/v1/kv/{KEY_PREFIX}{await self._known(service)}", value)

    async def clear_fault(self, service: str) -> None:
        await self._call("DELETE", f"/v1/kv/{KEY_PREFIX}{await self._known(service)}")

    async def close(self) -> None:
        await self._session.close()


def _decoded(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(base64.b64decode(value))
    except ValueError:
        return None
