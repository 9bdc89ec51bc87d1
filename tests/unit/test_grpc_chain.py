"""The interceptor chain of every gRPC service on a real in-process server (loopback only),
with the users servicer over a fake service layer: no database, no Consul."""

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.auth.tokens import generate_signing_key, internal_claims, sign
from services.common import errors, grpc_server
from services.common.faults import NO_FAULTS, Faults
from services.users.api import UserServicer
from services.users.domain import User
from services.users.service import UserPage
from shopmesh.users.v1 import users_pb2, users_pb2_grpc

KEY = generate_signing_key(datetime.now(UTC))


def admin():
    """An admin's metadata, minted when used (one minted at import could expire before a test
    that runs late in a long suite)."""
    claims = internal_claims(
        sub="admin", roles=("user", "admin"), now=int(datetime.now(UTC).timestamp())
    )
    return (("authorization", "Bearer " + sign(claims, KEY)),)


class StaticKeys:
    async def key(self, kid):
        return KEY.verification_key if kid == KEY.kid else None


ALICE = User("alice", "Alice", "alice@shopmesh.local", ("user",), False, None, datetime.now(UTC))


class FakeUsers:
    def __init__(self, error=None):
        self.error = error

    async def get_user(self, user_id):
        if self.error is not None:
            raise self.error
        return ALICE

    async def list_users(self, page_size, page_token):
        return UserPage([ALICE], "")


async def with_server(users, faults, scenario):
    server = grpc.aio.server(
        interceptors=grpc_server.interceptors("users", lambda: faults, StaticKeys())
    )
    users_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(users), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await scenario(channel)
    finally:
        await server.stop(0)


async def get_user(channel, user_id="alice", metadata=None):
    stub = users_pb2_grpc.UserServiceStub(channel)
    try:
        request = users_pb2.GetUserRequest(user_id=user_id)
        metadata = admin() if metadata is None else metadata
        user = await stub.GetUser(request, timeout=5, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, user.id


def run(users, scenario, faults=NO_FAULTS):
    return asyncio.run(with_server(users, faults, scenario))


def test_a_user_is_returned_through_the_chain():
    assert run(FakeUsers(), get_user) == (grpc.StatusCode.OK, "alice")


def test_a_call_without_an_internal_token_is_unauthenticated():
    async def scenario(channel):
        return await get_user(channel, metadata=())

    code, _ = run(FakeUsers(), scenario)
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            errors.InvalidArgument("user_id", "must not be empty"),
            (grpc.StatusCode.INVALID_ARGUMENT, "user_id must not be empty"),
        ),
        (errors.NotFound("user 'x' not found"), (grpc.StatusCode.NOT_FOUND, "user 'x' not found")),
        (
            errors.PermissionDenied("requires the role admin"),
            (grpc.StatusCode.PERMISSION_DENIED, "requires the role admin"),
        ),
        (RuntimeError("secret internals"), (grpc.StatusCode.INTERNAL, "internal error")),
    ],
)
def test_clients_receive_the_mapped_status_and_message(error, expected):
    assert run(FakeUsers(error), get_user) == expected


def test_an_injected_fault_fails_only_the_named_method_with_unavailable():
    faults = Faults(error_rate=1.0, methods=("GetUser",))

    async def scenario(channel):
        stub = users_pb2_grpc.UserServiceStub(channel)
        listed = await stub.ListUsers(users_pb2.ListUsersRequest(), timeout=5, metadata=admin())
        return await get_user(channel), [u.id for u in listed.users]

    assert run(FakeUsers(), scenario, faults) == (
        (grpc.StatusCode.UNAVAILABLE, "injected fault"),
        ["alice"],
    )


def test_health_checks_are_never_failed_by_fault_flags():
    async def scenario(channel):
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return reply.status

    assert run(FakeUsers(), scenario, Faults(error_rate=1.0)) == (
        health_pb2.HealthCheckResponse.SERVING
    )
