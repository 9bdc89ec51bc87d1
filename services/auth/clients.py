"""The users service, called over gRPC through auth's sidecar (upstream `users`).

Auth calls with an internal token of its own (sub `auth`, role `service`), minted with its
signing key, so users can verify auth like any other caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from services.common.grpc_client import call_with_retries, upstream_channel
from shopmesh.users.v1 import users_pb2, users_pb2_grpc

log = logging.getLogger(__name__)

USERS_BUDGET_S = 1.0


class UnknownUser(Exception):
    """users has no user with this id."""


class UsersUnavailable(Exception):
    """users did not answer usefully within the call's budget."""

    def __init__(self, cause: grpc.aio.AioRpcError) -> None:
        super().__init__(f"users unavailable: {cause.code().name} {cause.details()}")
        self.code = cause.code()


@dataclass(frozen=True)
class UserInfo:
    id: str
    roles: frozenset[str]
    blocked: bool


class UsersClient:
    def __init__(self, port: int, token: Callable[[], str]) -> None:
        self._channel = upstream_channel(port)
        self._stub = users_pb2_grpc.UserServiceStub(self._channel)
        self._token = token

    async def get_user(self, user_id: str) -> UserInfo:
        request = users_pb2.GetUserRequest(user_id=user_id)
        metadata = (("authorization", f"Bearer {self._token()}"),)
        try:
            user = await call_with_retries(
                self._stub.GetUser, request, budget_s=USERS_BUDGET_S, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise UnknownUser(user_id) from exc
            if exc.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                log.error(
                    "users refused auth's own token",
                    extra={"code": exc.code().name, "details": exc.details()},
                )
            raise UsersUnavailable(exc) from exc
        return UserInfo(id=user.id, roles=frozenset(user.roles), blocked=user.blocked)

    async def close(self) -> None:
        await self._channel.close()
