"""The BFF's views, joined from what the services answer: plain Python, unit-tested."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

JsonObject = Mapping[str, Any]


def is_about_order(notification: JsonObject, order_id: str) -> bool:
    """Whether a notification (notifications' history item) concerns the order: its data names
    the order, or its subject is the order's (`order/<id>`)."""
    data = notification.get("data")
    if isinstance(data, Mapping) and data.get("orderId") == order_id:
        return True
    return notification.get("subject") == f"order/{order_id}"


def order_view(
    order: JsonObject,
    payment: JsonObject | None,
    notifications: Iterable[JsonObject],
    *,
    payment_error: str | None = None,
) -> dict[str, Any]:
    """One order as the page shows it: the order, its payment (None before there is one, or
    when payments could not answer: `paymentError` says so) and its notifications, oldest
    first."""
    order_id = str(order["id"])
    mine = [n for n in notifications if is_about_order(n, order_id)]
    mine.sort(key=lambda n: str(n.get("createdAt", "")))
    return {
        "order": dict(order),
        "payment": None if payment is None else dict(payment),
        "paymentError": payment_error,
        "notifications": [dict(n) for n in mine],
    }
