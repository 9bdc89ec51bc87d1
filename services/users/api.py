"""gRPC entrypoints: protobuf messages in and out; errors are raised as domain errors and
mapped to status codes by services.common.rpc.ErrorInterceptor."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.auth.principal import current_principal, require_role, require_self_or_admin
from services.users.domain import User
from services.users.service import UserService
from shopmesh.users.v1 import users_pb2, users_pb2_grpc

ADMIN_ROLE = "admin"
SERVICE_ROLE = "service"
SERVICE_NAME = users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


class UserServicer(users_pb2_grpc.UserServiceServicer):
    def __init__(self, service: UserService) -> None:
        self._service = service

    async def GetUser(
        self,
        request: users_pb2.GetUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.GetUserRequest, users_pb2.User],
    ) -> users_pb2.User:
        require_self_or_admin(current_principal(), request.user_id, SERVICE_ROLE)
        return to_proto(await self._service.get_user(request.user_id))

    async def CreateUser(
        self,
        request: users_pb2.CreateUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.CreateUserRequest, users_pb2.User],
    ) -> users_pb2.User:
        require_role(current_principal(), ADMIN_ROLE, SERVICE_ROLE)
        return to_proto(await self._service.create_user(request.name, request.email))

    async def BlockUser(
        self,
        request: users_pb2.BlockUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.BlockUserRequest, users_pb2.User],
    ) -> users_pb2.User:
        require_role(current_principal(), ADMIN_ROLE)
        return to_proto(await self._service.block_user(request.user_id, request.reason))

    async def ListUsers(
        self,
        request: users_pb2.ListUsersRequest,
        context: grpc.aio.ServicerContext[users_pb2.ListUsersRequest, users_pb2.ListUsersResponse],
    ) -> users_pb2.ListUsersResponse:
        require_role(current_principal(), ADMIN_ROLE, SERVICE_ROLE)
        page = await self._service.list_users(request.page_size, request.page_token)
        return users_pb2.ListUsersResponse(
            users=[to_proto(user) for user in page.users], next_page_token=page.next_page_token
        )

    async def BatchCreateUsers(
        self,
        request: users_pb2.BatchCreateUsersRequest,
        context: grpc.aio.ServicerContext[
            users_pb2.BatchCreateUsersRequest, users_pb2.BatchCreateUsersResponse
        ],
    ) -> users_pb2.BatchCreateUsersResponse:
        require_role(current_principal(), ADMIN_ROLE)
        created = await self._service.batch_create_users(
            [(each.name, each.email) for each in request.requests]
        )
        return users_pb2.BatchCreateUsersResponse(users=[to_proto(user) for user in created])


def to_proto(user: User) -> users_pb2.User:
    created_at = Timestamp()
    created_at.FromDatetime(user.created_at)
    return users_pb2.User(
        id=user.id,
        name=user.name,
        email=user.email,
        roles=list(user.roles),
        blocked=user.blocked,
        created_at=created_at,
    )
