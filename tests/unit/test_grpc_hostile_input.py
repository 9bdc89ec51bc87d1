"""Any text in a field of a users or payments RPC is INVALID_ARGUMENT or a use case's own answer,
never a bug (INTERNAL, UNKNOWN); what reaches the database is text Postgres can store.

The request validation the servicers call, and the service layers over a pool that finds
nothing and fails on text as Postgres would. A request whose bytes do not parse (a string field
that is not UTF-8) is INVALID_ARGUMENT through the real interceptor chain.
"""

import asyncio
import base64
import contextlib
import json
from datetime import UTC, datetime

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import pagination
from services.common.errors import DomainError, InvalidArgument
from services.common.faults import NO_FAULTS
from services.common.rpc import UndecodableRequest, tolerant
from services.payments import domain as payments
from services.payments.repository import PostgresPaymentsDatabase
from services.payments.service import PaymentService, watch_key
from services.users import domain as users
from services.users.repository import PostgresUsersDatabase
from services.users.service import UserService
from shopmesh.payments.v1 import payments_pb2
from shopmesh.users.v1 import users_pb2
from tests.unit.hostile_text import PostgresLikePool, hostile_text, store_as_postgres_would
from tests.unit.test_grpc_chain import FakeUsers, admin, with_server

PROPERTY = settings(max_examples=200, deadline=None)
optional_text = st.none() | hostile_text
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def page_token_of(created_at: str, item_id: object) -> str:
    """A token shaped like the ones we issue, around any position."""
    raw = json.dumps([created_at, item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


page_tokens = st.one_of(
    hostile_text,
    st.builds(
        page_token_of,
        st.sampled_from(["2026-11-29T10:15:00+00:00", "2026-11-29T10:15:00"]) | hostile_text,
        hostile_text,
    ),
)


def storable_or_invalid(call, *args, fields):
    """`call(*args)`'s text results (all storable), or () when it raised InvalidArgument naming
    one of `fields`."""
    try:
        result = call(*args)
    except InvalidArgument as exc:
        assert exc.field in fields, exc
        return ()
    values = result if isinstance(result, tuple) else (result,)
    store_as_postgres_would(*values)
    return values


def run_use_case(coroutine) -> None:
    """A use case ends with a result or a domain error; anything else is a bug."""

    async def go():
        with contextlib.suppress(DomainError):
            await coroutine

    asyncio.run(go())


# --- users ---------------------------------------------------------------------------------


@PROPERTY
@given(name=hostile_text, email=hostile_text)
def test_any_create_user_fields_are_storable_or_invalid_argument(name, email):
    try:
        user = users.new_user(name, email)
    except InvalidArgument as exc:
        assert exc.field in {"name", "email"}
    else:
        store_as_postgres_would(user.name, user.email)


@PROPERTY
@given(user_id=hostile_text, reason=hostile_text)
def test_any_user_id_and_block_reason_are_storable_or_invalid_argument(user_id, reason):
    storable_or_invalid(users.valid_user_id, user_id, fields={"user_id"})
    storable_or_invalid(users.valid_block_reason, reason, fields={"reason"})


@PROPERTY
@given(page_size=int32, page_token=page_tokens)
def test_any_page_token_is_a_storable_position_or_invalid_argument(page_size, page_token):
    storable_or_invalid(pagination.decode_page_token, page_token, fields={"page_token"})
    storable_or_invalid(pagination.page_size, page_size, fields={"page_size"})


@PROPERTY
@given(
    user_id=hostile_text,
    name=hostile_text,
    email=hostile_text,
    reason=hostile_text,
    page_size=int32,
    page_token=page_tokens,
)
def test_any_text_in_a_users_rpc_reaches_the_database_only_if_storable(
    user_id, name, email, reason, page_size, page_token
):
    service = UserService(PostgresUsersDatabase(PostgresLikePool()))
    run_use_case(service.get_user(user_id))
    run_use_case(service.create_user(name, email))
    run_use_case(service.block_user(user_id, reason))
    run_use_case(service.list_users(page_size, page_token))


# --- payments ------------------------------------------------------------------------------


@PROPERTY
@given(order_id=hostile_text, user_id=hostile_text, amount=int64, currency=hostile_text)
def test_any_process_payment_fields_are_storable_or_invalid_argument(
    order_id, user_id, amount, currency
):
    fields = {"order_id", "user_id", "amount", "currency"}
    try:
        request = payments.payment_request(order_id, user_id, amount, currency)
    except InvalidArgument as exc:
        assert exc.field in fields, exc
    else:
        store_as_postgres_would(request.order_id, request.user_id, request.currency)


@PROPERTY
@given(payment_id=optional_text, order_id=optional_text)
def test_any_watch_key_is_a_storable_key_or_invalid_argument(payment_id, order_id):
    storable_or_invalid(
        lambda: tuple(str(key) for key in watch_key(payment_id, order_id) if key is not None),
        fields={"payment_id", "order_id"},
    )


@PROPERTY
@given(payment_id=hostile_text, user_id=hostile_text, page_size=int32, page_token=page_tokens)
def test_any_text_in_a_payments_rpc_reaches_the_database_only_if_storable(
    payment_id, user_id, page_size, page_token
):
    service = PaymentService(PostgresPaymentsDatabase(PostgresLikePool()), notifier=None)
    run_use_case(service.get_payment(payment_id))
    run_use_case(service.list_payments(user_id, page_size, page_token))


# --- requests that do not parse -------------------------------------------------------------

NOT_UTF8 = b"\n\x03\xed\xa0\x80"  # field 1 (a string) holding the bytes of a lone surrogate


@PROPERTY
@given(raw=st.binary(max_size=60))
def test_any_request_bytes_deserialize_to_a_message_or_an_undecodable_request(raw):
    for message in (users_pb2.GetUserRequest, payments_pb2.WatchPaymentRequest):
        decoded = tolerant(message.FromString)(raw)
        assert isinstance(decoded, (message, UndecodableRequest))


def test_a_request_with_a_string_that_is_not_utf8_is_invalid_argument_through_the_chain():
    async def scenario(channel):
        get_user = channel.unary_unary(
            "/shopmesh.users.v1.UserService/GetUser",
            request_serializer=lambda raw: raw,
            response_deserializer=users_pb2.User.FromString,
        )
        outcomes = []
        for metadata in (admin(), ()):
            try:
                await get_user(NOT_UTF8, timeout=5, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                outcomes.append((exc.code(), exc.details()))
        return outcomes

    (as_admin, anonymous) = asyncio.run(with_server(FakeUsers(), NO_FAULTS, scenario))
    assert as_admin[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert as_admin[1].startswith("request cannot be parsed (")
    assert "String field had bad UTF-8" in as_admin[1]
    # The caller is authenticated before the request is looked at.
    assert anonymous[0] == grpc.StatusCode.UNAUTHENTICATED


def test_a_page_token_around_a_lone_surrogate_is_an_invalid_page_token():
    token = page_token_of(datetime.now(UTC).isoformat(), "alice\ud800")
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_page_token(token)
    assert caught.value.field == "page_token"
