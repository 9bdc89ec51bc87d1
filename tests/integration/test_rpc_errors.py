"""Bad input on every RPC gets a precise status and message, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import uuid

import grpc
import pytest

from shopmesh.payments.v1 import payments_pb2 as pay
from shopmesh.users.v1 import users_pb2 as usr

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

USER_CASES = {
    "GetUser empty id": ("GetUser", usr.GetUserRequest(user_id=""), INVALID),
    "GetUser unknown id": ("GetUser", usr.GetUserRequest(user_id="nobody-at-all"), NOT_FOUND),
    "CreateUser empty name": (
        "CreateUser",
        usr.CreateUserRequest(name="", email="x@example.org"),
        INVALID,
    ),
    "CreateUser bad email": (
        "CreateUser",
        usr.CreateUserRequest(name="X", email="not-an-email"),
        INVALID,
    ),
    "CreateUser taken email": (
        "CreateUser",
        usr.CreateUserRequest(name="A", email="alice@shopmesh.local"),
        grpc.StatusCode.ALREADY_EXISTS,
    ),
    "BlockUser empty id": ("BlockUser", usr.BlockUserRequest(user_id=""), INVALID),
    "BlockUser unknown id": ("BlockUser", usr.BlockUserRequest(user_id="nobody-at-all"), NOT_FOUND),
    "ListUsers negative page size": ("ListUsers", usr.ListUsersRequest(page_size=-1), INVALID),
    "ListUsers huge page size": ("ListUsers", usr.ListUsersRequest(page_size=100000), INVALID),
    "ListUsers garbage token": ("ListUsers", usr.ListUsersRequest(page_token="%%%"), INVALID),
}


def payment(**overrides: object) -> pay.ProcessPaymentRequest:
    fields = {"order_id": str(uuid.uuid4()), "user_id": "alice", "amount": 100, "currency": "RUB"}
    return pay.ProcessPaymentRequest(**{**fields, **overrides})


PAYMENT_CASES = {
    "ProcessPayment empty order id": ("ProcessPayment", payment(order_id=""), INVALID),
    "ProcessPayment empty user id": ("ProcessPayment", payment(user_id=""), INVALID),
    "ProcessPayment zero amount": ("ProcessPayment", payment(amount=0), INVALID),
    "ProcessPayment negative amount": ("ProcessPayment", payment(amount=-5), INVALID),
    "ProcessPayment unknown currency": ("ProcessPayment", payment(currency="USD"), INVALID),
    "GetPayment malformed id": ("GetPayment", pay.GetPaymentRequest(payment_id="x"), INVALID),
    "GetPayment unknown id": (
        "GetPayment",
        pay.GetPaymentRequest(payment_id=str(uuid.uuid4())),
        NOT_FOUND,
    ),
    "ListPayments no user": ("ListPayments", pay.ListPaymentsRequest(user_id=""), INVALID),
    "ListPayments garbage token": (
        "ListPayments",
        pay.ListPaymentsRequest(user_id="alice", page_token="%%%"),
        INVALID,
    ),
}


def assert_refused(call, request, expected: grpc.StatusCode) -> None:
    try:
        response = call(request, timeout=10)
        if hasattr(response, "__iter__") and not hasattr(response, "ListFields"):
            list(response)
    except grpc.RpcError as exc:
        assert exc.code() == expected, f"{exc.code()}: {exc.details()}"
        assert exc.details() and "internal" not in exc.details().lower()
    else:
        raise AssertionError(f"expected {expected.name}, the call succeeded")


@pytest.mark.parametrize("case", sorted(USER_CASES))
def test_users_rejects_bad_input_with_a_precise_status(users_grpc, case: str) -> None:
    method, request, expected = USER_CASES[case]
    assert_refused(getattr(users_grpc, method), request, expected)


@pytest.mark.parametrize("case", sorted(PAYMENT_CASES))
def test_payments_rejects_bad_input_with_a_precise_status(payments_grpc, case: str) -> None:
    method, request, expected = PAYMENT_CASES[case]
    assert_refused(getattr(payments_grpc, method), request, expected)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pay.WatchPaymentRequest(payment_id=str(uuid.uuid4())), NOT_FOUND),
        (pay.WatchPaymentRequest(payment_id="x"), INVALID),
        (pay.WatchPaymentRequest(), INVALID),
    ],
    ids=["unknown payment", "malformed id", "no key"],
)
def test_watch_payment_rejects_bad_input(payments_grpc, request_, expected) -> None:
    assert_refused(payments_grpc.WatchPayment, request_, expected)
