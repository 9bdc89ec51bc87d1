import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from services.common.errors import InvalidArgument
from services.payments import api, domain, repository, service
from services.payments.domain import PaymentStatus
from shopmesh.payments.v1 import payments_pb2


def request(**overrides):
    fields = {"order_id": "o-1", "user_id": "alice", "amount": 1500, "currency": "RUB"}
    fields.update(overrides)
    return domain.payment_request(**fields)


def invalid(**overrides):
    with pytest.raises(InvalidArgument) as caught:
        request(**overrides)
    return caught.value.field, str(caught.value)


def test_a_valid_request_is_accepted_as_is():
    assert request() == domain.PaymentRequest("o-1", "alice", 1500, "RUB")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"order_id": ""}, "order_id", "order_id must not be empty"),
        ({"order_id": "o" * 65}, "order_id", "order_id must be at most 64 characters long"),
        ({"order_id": "o\x00"}, "order_id", "order_id must not contain control characters"),
        ({"user_id": ""}, "user_id", "user_id must not be empty"),
        ({"user_id": "u" * 65}, "user_id", "user_id must be at most 64 characters long"),
        ({"user_id": "u\ud800"}, "user_id", "user_id must not contain lone surrogates"),
        ({"amount": 0}, "amount", "amount must be a positive number of minor units"),
        ({"amount": -100}, "amount", "amount must be a positive number of minor units"),
        ({"amount": 10**12 + 1}, "amount", "amount must be at most 1000000000000 minor units"),
        ({"currency": "USD"}, "currency", "currency must be one of RUB"),
        ({"currency": "rub"}, "currency", "currency must be one of RUB"),
        ({"currency": ""}, "currency", "currency must be one of RUB"),
    ],
)
def test_each_invalid_field_is_named(overrides, field, message):
    assert invalid(**overrides) == (field, message)


def test_the_boundaries_of_the_rules_are_accepted():
    assert request(order_id="o" * 64, user_id="u" * 64, amount=10**12).amount == 10**12
    assert request(amount=1).amount == 1


@pytest.mark.parametrize(
    ("amount", "status", "reason"),
    [
        (1, PaymentStatus.SUCCEEDED, None),
        (1_000_000, PaymentStatus.SUCCEEDED, None),
        (1_000_001, PaymentStatus.DECLINED, "amount exceeds the single-payment limit"),
        (10**12, PaymentStatus.DECLINED, "amount exceeds the single-payment limit"),
    ],
)
def test_the_provider_declines_amounts_above_the_single_payment_limit(amount, status, reason):
    assert domain.provider_decision(amount) == domain.Outcome(status, reason)


def test_a_charge_takes_the_simulated_processing_time_then_decides():
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    payment = domain.new_payment(request(amount=2_000_000))
    outcome = asyncio.run(domain.charge(payment, sleep=sleep))
    assert slept == [0.1]
    assert outcome.status is PaymentStatus.DECLINED


def test_a_new_payment_is_pending_with_its_request_fields():
    now = datetime(2026, 11, 29, tzinfo=UTC)
    payment = domain.new_payment(request(), now=now)
    assert payment.status is PaymentStatus.PENDING
    assert (payment.order_id, payment.user_id, payment.amount, payment.currency) == (
        "o-1",
        "alice",
        1500,
        "RUB",
    )
    assert payment.created_at == payment.updated_at == now
    assert payment.decline_reason is None


def test_every_status_but_pending_is_final():
    assert [s for s in PaymentStatus if not s.final] == [PaymentStatus.PENDING]


def test_a_cancelled_payment_holds_the_orders_request_fields_and_no_lease():
    payment = domain.cancelled_payment(request())
    assert (payment.status, payment.decline_reason) == (PaymentStatus.CANCELLED, None)
    assert request().conflicts(payment) == []


def test_a_refund_takes_the_simulated_processing_time():
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    asyncio.run(domain.refund(domain.new_payment(request()), sleep=sleep))
    assert slept == [0.1]


def test_a_repeated_request_conflicts_on_the_fields_that_differ():
    existing = domain.new_payment(request())
    assert request().conflicts(existing) == []
    assert request(amount=1600, currency="RUB").conflicts(existing) == ["amount"]
    assert request(user_id="bob", amount=1).conflicts(existing) == ["user_id", "amount"]


@pytest.mark.parametrize(("raw", "message"), [("", "must not be empty"), ("abc", "must be a UUID")])
def test_payment_ids_must_be_uuids(raw, message):
    with pytest.raises(InvalidArgument) as caught:
        domain.valid_payment_id(raw)
    assert (caught.value.field, caught.value.message) == ("payment_id", message)


def test_a_change_notification_round_trips_the_payment():
    payment = domain.new_payment(request(amount=2_000_000))
    declined = domain.Payment(
        **{
            **vars(payment),
            "status": PaymentStatus.DECLINED,
            "decline_reason": domain.DECLINED_OVER_LIMIT,
        }
    )
    payload = repository.encode_notification(declined)
    assert len(payload.encode()) < 8000  # Postgres' NOTIFY payload limit
    assert repository.decode_notification(payload) == declined


def test_every_status_has_its_grpc_enum_value():
    assert {api.STATUS[s] for s in PaymentStatus} == {
        payments_pb2.PAYMENT_STATUS_PENDING,
        payments_pb2.PAYMENT_STATUS_SUCCEEDED,
        payments_pb2.PAYMENT_STATUS_DECLINED,
        payments_pb2.PAYMENT_STATUS_CANCELLED,
        payments_pb2.PAYMENT_STATUS_REFUNDED,
    }


def test_the_grpc_payment_carries_every_field():
    payment = domain.new_payment(request(), payment_id=uuid.UUID(int=1))
    message = api.to_proto(payment)
    assert message.id == "00000000-0000-0000-0000-000000000001"
    assert (message.order_id, message.user_id, message.amount, message.currency) == (
        "o-1",
        "alice",
        1500,
        "RUB",
    )
    assert message.status == payments_pb2.PAYMENT_STATUS_PENDING
    assert message.decline_reason == ""
    assert message.created_at == message.updated_at


@pytest.mark.parametrize(
    ("remaining", "budget"),
    [(None, service.MAX_WAIT_S), (2.0, 1.9), (0.05, 0.0), (60.0, service.MAX_WAIT_S)],
)
def test_a_repeated_call_waits_for_the_outcome_until_just_before_its_deadline(remaining, budget):
    assert service.wait_budget(remaining) == pytest.approx(budget)


def test_a_watch_needs_a_payment_id_or_an_order_id():
    with pytest.raises(InvalidArgument, match="payment_id or order_id is required"):
        service.watch_key(None, None)
    assert service.watch_key(None, "o-1") == (None, "o-1")
    assert service.watch_key(str(uuid.UUID(int=2)), None) == (uuid.UUID(int=2), None)
