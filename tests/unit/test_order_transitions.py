from __future__ import annotations

import pytest

from services.orders.domain import InvalidTransition, OrderItem, OrderStatus, new_order, sources_of


def order():
    return new_order("alice", [OrderItem("book", 1)])


def test_a_paid_order_keeps_its_payment_id() -> None:
    paid = order().moved_to(OrderStatus.PAID, payment_id="p-1")
    assert paid.status == OrderStatus.PAID
    assert paid.payment_id == "p-1"


def test_a_deferred_order_can_still_be_paid_or_cancelled() -> None:
    pending = order().moved_to(OrderStatus.PAYMENT_PENDING, reason="payments unavailable")
    assert pending.moved_to(OrderStatus.PAID, payment_id="p").status == OrderStatus.PAID
    assert pending.moved_to(OrderStatus.CANCELLED).status == OrderStatus.CANCELLED


@pytest.mark.parametrize("final", [OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.CANCELLED])
def test_final_statuses_cannot_change(final: OrderStatus) -> None:
    settled = order().moved_to(final)
    with pytest.raises(InvalidTransition, match=f"{final.value} cannot become CANCELLED"):
        settled.moved_to(OrderStatus.CANCELLED)


def test_cancel_is_allowed_only_from_unsettled_statuses() -> None:
    assert set(sources_of(OrderStatus.CANCELLED)) == {
        OrderStatus.PENDING,
        OrderStatus.PAYMENT_PENDING,
    }
