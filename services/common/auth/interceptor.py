"""The grpc.aio side: every RPC but the health checks carries an internal token the service
verifies itself."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from services.common.auth.jwt import KeySource, bearer_token
from services.common.auth.principal import Principal, Unauthenticated, calling_as
from services.common.auth.verified_tokens import VerifiedTokens
from services.common.rpc import (
    Behavior,
    Context,
    Continuation,
    Handler,
    iterate_responses,
    wrap_handler,
)

log = logging.getLogger(__name__)

EXEMPT_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Require an internal token in the `authorization` metadata of every RPC except the
    grpc.health.v1 checks; UNAUTHENTICATED otherwise. Handlers read `current_principal()`."""

    def __init__(
        self, keys: KeySource, *, exempt_prefixes: tuple[str, ...] = EXEMPT_GRPC_PREFIXES
    ) -> None:
        self._tokens = VerifiedTokens(keys)
        self._exempt = exempt_prefixes

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(self._exempt):
            return handler
        authorization = _metadata_value(handler_call_details.invocation_metadata, "authorization")

        async def authenticate(context: Context) -> Principal:
            try:
                return await self._tokens.principal(bearer_token(authorization))
            except Unauthenticated as exc:
                log.info(
                    "rpc refused: unauthenticated", extra={"method": method, "reason": exc.reason}
                )
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
                raise  # not reached: abort raises

        def unary(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> Any:
                with calling_as(await authenticate(context)):
                    return await behavior(request, context)

            return handle

        def streaming(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
                with calling_as(await authenticate(context)):
                    async for response in iterate_responses(behavior, request, context):
                        yield response

            return handle

        return wrap_handler(handler, unary_response=unary, streaming_response=streaming)


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return None
