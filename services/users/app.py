"""Wiring: the one place that knows the servicer, the service layer and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from services.common.config import ServiceSettings
from services.common.grpc_server import GrpcApp, Servicer
from services.common.kafka import messaging
from services.common.messaging.migrations import OUTBOX
from services.common.migrations import ServiceMigrations
from services.users.api import SERVICE_NAME, UserServicer
from services.users.repository import PostgresUsersDatabase
from services.users.service import UserService
from shopmesh.users.v1 import users_pb2_grpc

MIGRATIONS = ServiceMigrations(Path(__file__).with_name("migrations"), shared=(OUTBOX,))


@asynccontextmanager
async def wiring(pool: asyncpg.Pool, settings: ServiceSettings) -> AsyncIterator[GrpcApp]:
    """The servicer, and the outbox relay publishing UserCreated / UserBlocked to user-events."""
    servicer = UserServicer(UserService(PostgresUsersDatabase(pool)))
    async with messaging(pool, settings.instance, relay=True):
        yield GrpcApp(
            servicers=[
                Servicer(SERVICE_NAME, servicer, users_pb2_grpc.add_UserServiceServicer_to_server)
            ]
        )
