from services.orders.domain import OrderItem
from services.orders.service import request_hash


def test_same_order_request_has_the_same_fingerprint():
    assert request_hash("alice", [OrderItem("p1", 2)]) == request_hash(
        "alice", [OrderItem("p1", 2)]
    )


def test_any_change_to_the_request_changes_its_fingerprint():
    base = request_hash("alice", [OrderItem("p1", 2)])
    assert request_hash("bob", [OrderItem("p1", 2)]) != base
    assert request_hash("alice", [OrderItem("p1", 3)]) != base
    assert request_hash("alice", [OrderItem("p2", 2)]) != base
    assert request_hash("alice", [OrderItem("p1", 2), OrderItem("p1", 2)]) != base
