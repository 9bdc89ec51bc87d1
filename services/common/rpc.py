"""gRPC server plumbing shared by every gRPC service: error mapping, RPC logs, handler wrapping.

`ErrorInterceptor` turns the domain errors of services.common.errors into canonical status codes
with the error's message, a database that cannot be reached into UNAVAILABLE, and anything
unexpected into INTERNAL "internal error" (logged with its traceback: it is a bug). It logs
every RPC once as JSON: method, code, duration_ms.

`DecodeInterceptor` makes a request message that does not parse (a string field that is not
UTF-8, say) an InvalidArgument; grpc itself would end the RPC with UNKNOWN.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from services.common import errors
from services.common.db import DATABASE_UNAVAILABLE
from services.common.logging import outcome_level

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"

# Methods every server has that are not part of a service's own API: they are logged at debug
# level (Consul calls the health check every second) and fault flags never apply to them.
INFRASTRUCTURE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_STATUS_FOR_ERROR: tuple[tuple[type[errors.DomainError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)

# The database is down or restarting (db.DATABASE_UNAVAILABLE): UNAVAILABLE, which callers and
# the mesh retry, rather than INTERNAL. Logged as a warning.
DATABASE_UNAVAILABLE_MESSAGE = "database unavailable, retry later"

# The grpc.aio context and method handler of an RPC whatever its messages are (interceptors see
# every method). RpcMethodHandler is generic only in the type stubs, hence the quotes.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]
Behavior: TypeAlias = Callable[[Any, Context], Any]
BehaviorWrapper: TypeAlias = Callable[[Behavior], Behavior]
Deserializer: TypeAlias = Callable[[bytes], Any]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a handler's exception becomes."""
    for error_type, code in _STATUS_FOR_ERROR:
        if isinstance(exc, error_type):
            return code, str(exc)
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE_MESSAGE
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def is_infrastructure(method: str) -> bool:
    """Whether `method` (a full "/package.Service/Method" name) is health or reflection."""
    return method.startswith(INFRASTRUCTURE_PREFIXES)


def short_name(method: str) -> str:
    """ "/shopmesh.payments.v1.PaymentService/ProcessPayment" -> "ProcessPayment"."""
    return method.rsplit("/", 1)[-1]


def wrap_handler(
    handler: Handler | None,
    *,
    unary_response: BehaviorWrapper,
    streaming_response: BehaviorWrapper,
    request_deserializer: Deserializer | None = None,
) -> Handler | None:
    """A copy of `handler` whose behavior is wrapped, keeping its (de)serializers unless
    `request_deserializer` replaces the request's.

    `unary_response` wraps coroutine behaviors (unary-unary, stream-unary);
    `streaming_response` wraps behaviors whose response is a stream (unary-stream,
    stream-stream) and must return an async generator function.
    """
    if handler is None:
        return None
    codecs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(_aio(handler.unary_unary)), **codecs
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming_response(_aio(handler.unary_stream)), **codecs
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(_aio(handler.stream_unary)), **codecs
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            streaming_response(_aio(handler.stream_stream)), **codecs
        )
    return handler


def _aio(behavior: Callable[..., object]) -> Behavior:
    """A grpc.aio handler's behavior as what it is: the type stubs describe RpcMethodHandler's
    behaviors as sync grpc's (a grpc.ServicerContext, an Iterator of requests or responses)."""
    return cast(Behavior, behavior)


async def iterate_responses(
    behavior: Behavior, request: Any, context: Context
) -> AsyncIterator[Any]:
    """The responses of a streaming behavior, whether it yields them or writes them with
    `context.write` (then there is nothing to yield)."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes and logs every RPC (method, code, duration_ms)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)

        def unary_response(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> Any:
                started = time.monotonic()
                code = grpc.StatusCode.OK
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    code = ending_code(exc, context)
                    await _abort_for(exc, code, method, context)
                    raise
                finally:
                    _log_rpc(method, context, code, started)

            return handle

        def streaming_response(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
                started = time.monotonic()
                code = grpc.StatusCode.OK
                try:
                    async for response in iterate_responses(behavior, request, context):
                        yield response
                except BaseException as exc:
                    code = ending_code(exc, context)
                    await _abort_for(exc, code, method, context)
                    raise
                finally:
                    _log_rpc(method, context, code, started)

            return handle

        return wrap_handler(
            handler, unary_response=unary_response, streaming_response=streaming_response
        )


def ending_code(exc: BaseException, context: Context) -> grpc.StatusCode:
    """The status an RPC ends with when its handler raised `exc`."""
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, Exception):
        return status_for(exc)[0]
    remaining = context.time_remaining()
    if isinstance(exc, asyncio.CancelledError) and remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


async def _abort_for(
    exc: BaseException, code: grpc.StatusCode, method: str, context: Context
) -> None:
    """End the RPC with `code` if `exc` is an error of the handler's own (not a cancellation
    or an abort already made); unexpected errors are logged with their traceback."""
    if not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
        return
    if code is grpc.StatusCode.INTERNAL:
        log.error("unhandled error in rpc", exc_info=exc, extra={"method": method})
    elif isinstance(exc, DATABASE_UNAVAILABLE):
        log.warning(
            "database unavailable",
            extra={"method": method, "error": f"{type(exc).__name__}: {exc}"},
        )
    await context.abort(code, status_for(exc)[1])


# The caller's mistake or a refusal (the rest but OK are the server's failures).
CLIENT_ERRORS = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})  # fmt: skip


def _log_rpc(method: str, context: Context, code: grpc.StatusCode, started: float) -> None:
    if code is grpc.StatusCode.OK:
        code = context.code() or grpc.StatusCode.OK
    level = (
        logging.DEBUG
        if is_infrastructure(method)
        else outcome_level(
            client_error=code in CLIENT_ERRORS,
            server_error=code not in CLIENT_ERRORS and code is not grpc.StatusCode.OK,
        )
    )
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "rpc",
        extra={
            "method": method,
            "code": code.name,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        },
    )


@dataclass(frozen=True)
class UndecodableRequest:
    """What a request message that does not parse is handed on as, with the parser's reason."""

    reason: str


def tolerant(deserializer: Deserializer) -> Deserializer:
    """`deserializer`, answering UndecodableRequest where it would raise DecodeError (which
    grpc would turn into UNKNOWN before any interceptor sees the call)."""

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return UndecodableRequest(str(exc))

    return deserialize


def refuse_undecodable(request: Any) -> None:
    if isinstance(request, UndecodableRequest):
        raise errors.InvalidArgument("request", f"cannot be parsed ({request.reason})")


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    """A unary request that does not parse raises InvalidArgument instead of reaching the
    servicer; innermost, so the caller is authenticated first."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler

        def unary_response(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> Any:
                refuse_undecodable(request)
                return await behavior(request, context)

            return handle

        def streaming_response(behavior: Behavior) -> Behavior:
            async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
                refuse_undecodable(request)
                async for response in iterate_responses(behavior, request, context):
                    yield response

            return handle

        return wrap_handler(
            handler,
            unary_response=unary_response,
            streaming_response=streaming_response,
            request_deserializer=tolerant(handler.request_deserializer),
        )
