"""Error mapping and RPC logs of the gRPC interceptor, with a fake servicer context."""

import asyncio
import logging

import asyncpg
import grpc
import pytest

from services.common import errors, rpc


class FakeContext:
    """The parts of grpc.aio.ServicerContext the interceptors use."""

    def __init__(self, remaining=None):
        self.remaining = remaining
        self.aborted = None

    async def abort(self, code, details=""):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    def code(self):
        return None if self.aborted is None else self.aborted[0]

    def time_remaining(self):
        return self.remaining


def details(method="/shopmesh.test.v1.TestService/Do"):
    class Details:
        pass

    call = Details()
    call.method = method
    return call


async def intercepted(behavior, *, streaming=False, method="/shopmesh.test.v1.TestService/Do"):
    """The behavior as the ErrorInterceptor wraps it."""

    async def continuation(_details):
        if streaming:
            return grpc.unary_stream_rpc_method_handler(behavior)
        return grpc.unary_unary_rpc_method_handler(behavior)

    handler = await rpc.ErrorInterceptor().intercept_service(continuation, details(method))
    return handler.unary_stream if streaming else handler.unary_unary


def call(behavior, context, **kwargs):
    async def go():
        return await (await intercepted(behavior, **kwargs))(object(), context)

    return asyncio.run(go())


def raising(exc):
    async def behavior(_request, _context):
        raise exc

    return behavior


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("email", "must not be empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("user 'x' not found"), grpc.StatusCode.NOT_FOUND),
        (
            errors.AlreadyExists("a user with this email already exists"),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (errors.FailedPrecondition("different amount"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unavailable("shutting down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_every_domain_error_ends_the_rpc_with_its_code_and_message(error, code):
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        call(raising(error), context)
    assert context.aborted == (code, str(error))


def test_invalid_argument_message_names_the_field():
    error = errors.InvalidArgument("amount", "must be a positive number of minor units")
    assert str(error) == "amount must be a positive number of minor units"
    assert (error.field, error.message) == ("amount", "must be a positive number of minor units")


def test_an_unexpected_exception_is_internal_without_its_message_and_logged_with_traceback(
    caplog,
):
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        call(raising(RuntimeError("password=hunter2 leaked detail")), context)
    assert context.aborted == (grpc.StatusCode.INTERNAL, "internal error")
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error in rpc"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.method == "/shopmesh.test.v1.TestService/Do"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
    ],
)
def test_an_unreachable_database_is_unavailable_so_callers_retry(error):
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        call(raising(error), context)
    assert context.aborted == (grpc.StatusCode.UNAVAILABLE, rpc.DATABASE_UNAVAILABLE_MESSAGE)


def test_an_abort_made_by_the_handler_passes_through_unchanged():
    async def behavior(_request, context):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "admins only")

    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        call(behavior, context)
    assert context.aborted == (grpc.StatusCode.PERMISSION_DENIED, "admins only")


def test_a_successful_rpc_returns_the_response_and_logs_method_code_and_duration_at_debug(caplog):
    async def behavior(_request, _context):
        return "response"

    caplog.set_level(logging.DEBUG)
    assert call(behavior, FakeContext()) == "response"
    [record] = [r for r in caplog.records if r.getMessage() == "rpc"]
    assert record.method == "/shopmesh.test.v1.TestService/Do"
    assert record.code == "OK"
    assert record.levelno == logging.DEBUG
    assert isinstance(record.duration_ms, float)


def test_a_failed_rpc_is_logged_with_its_status_code(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AbortError):
        call(raising(errors.NotFound("nope")), FakeContext())
    [record] = [r for r in caplog.records if r.getMessage() == "rpc"]
    assert record.code == "NOT_FOUND"
    assert record.levelno == logging.INFO


def test_a_cancelled_rpc_is_logged_as_cancelled_or_deadline_exceeded(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(asyncio.CancelledError):
        call(raising(asyncio.CancelledError()), FakeContext(remaining=None))
    with pytest.raises(asyncio.CancelledError):
        call(raising(asyncio.CancelledError()), FakeContext(remaining=0.0))
    codes = [r.code for r in caplog.records if r.getMessage() == "rpc"]
    assert codes == ["CANCELLED", "DEADLINE_EXCEEDED"]


def test_health_checks_are_logged_at_debug_level_only(caplog):
    async def behavior(_request, _context):
        return "SERVING"

    caplog.set_level(logging.DEBUG)
    call(behavior, FakeContext(), method="/grpc.health.v1.Health/Check")
    [record] = [r for r in caplog.records if r.getMessage() == "rpc"]
    assert record.levelno == logging.DEBUG


def test_errors_in_a_response_stream_are_mapped_after_the_messages_already_sent():
    async def behavior(_request, _context):
        yield "first"
        raise errors.Unavailable("the service is shutting down; watch again")

    context = FakeContext()

    async def consume():
        received = []
        with pytest.raises(grpc.aio.AbortError):
            wrapped = await intercepted(behavior, streaming=True)
            async for message in wrapped(object(), context):
                received.append(message)
        return received

    assert asyncio.run(consume()) == ["first"]
    assert context.aborted == (
        grpc.StatusCode.UNAVAILABLE,
        "the service is shutting down; watch again",
    )


def test_a_stream_written_with_context_write_still_runs():
    written = []

    async def behavior(_request, _context):
        written.append("written")

    async def consume():
        wrapped = await intercepted(behavior, streaming=True)
        return [m async for m in wrapped(object(), FakeContext())]

    assert asyncio.run(consume()) == []
    assert written == ["written"]
