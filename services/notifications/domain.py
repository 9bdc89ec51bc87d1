"""Notifications and the CloudEvents they are made from: plain Python, unit-tested.

A notification is the user-facing form of one event: its id is the event's id, so storing the
same event twice stores it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.errors import InvalidArgument
from services.common.fields import character_error
from services.common.jsonbody import json_type

SPECVERSION = "1.0"
MAX_ATTRIBUTE_LENGTH = 256
MAX_USER_ID_LENGTH = 200

FieldError = dict[str, str]


class InvalidEventError(ValueError):
    """The event is not a CloudEvent this service can deliver; `errors` names each field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(describe(errors))
        self.errors = list(errors)


class UnknownCursorError(InvalidArgument):
    """The history cursor is not the id of one of the user's notifications."""

    def __init__(self, after: uuid.UUID) -> None:
        message = "is not the id of one of this user's notifications"
        super().__init__("after", message, detail=f"query parameter after {message}")
        self.after = after


@dataclass(frozen=True)
class Notification:
    id: uuid.UUID
    type: str
    subject: str | None
    user_id: str
    data: dict[str, Any]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "subject": self.subject,
            "userId": self.user_id,
            "data": self.data,
            "createdAt": self.created_at.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }


def hello(user_id: str) -> dict[str, str]:
    """The first message on every WebSocket connection."""
    return {"type": "hello", "userId": user_id}


def notification_from_event(event: object, *, now: datetime) -> Notification:
    """The notification for a structured-mode CloudEvent; InvalidEventError if it is not one."""
    errors = event_errors(event)
    if errors or not isinstance(event, Mapping):
        raise InvalidEventError(errors)
    data = dict(event["data"])
    return Notification(
        id=uuid.UUID(event["id"]),
        type=event["type"],
        subject=event.get("subject"),
        user_id=data["userId"],
        data=data,
        created_at=now,
    )


def event_errors(event: object) -> list[FieldError]:
    """What makes `event` unusable, one entry per field, in attribute order."""
    if not isinstance(event, Mapping):
        return [{"field": "body", "message": "must be a JSON object"}]
    errors: list[FieldError] = []

    def check(field: str, message: str | None) -> None:
        if message is not None:
            errors.append({"field": field, "message": message})

    specversion = event.get("specversion")
    if specversion is None:
        check("specversion", "is required")
    elif specversion != SPECVERSION:
        check("specversion", f'must be "{SPECVERSION}"')
    check("id", _event_id_error(event.get("id")))
    check("source", _text_error(event.get("source"), MAX_ATTRIBUTE_LENGTH))
    check("type", _text_error(event.get("type"), MAX_ATTRIBUTE_LENGTH))
    if event.get("subject") is not None:
        check("subject", _text_error(event["subject"], MAX_ATTRIBUTE_LENGTH))
    if event.get("time") is not None:
        check("time", _time_error(event["time"]))
    if event.get("datacontenttype") is not None:
        check("datacontenttype", _content_type_error(event["datacontenttype"]))
    data = event.get("data")
    if data is None:
        check(
            "data",
            "must be a JSON object, not data_base64" if "data_base64" in event else "is required",
        )
    elif not isinstance(data, Mapping):
        check("data", f"must be an object, got {json_type(data)}")
    else:
        check("data.userId", _text_error(data.get("userId"), MAX_USER_ID_LENGTH))
    return errors


def user_id_error(value: str) -> str | None:
    """Why `value` cannot be a user id, or None (shared by events and the history query)."""
    return _text_error(value, MAX_USER_ID_LENGTH)


def describe(errors: Sequence[FieldError]) -> str:
    """A one-line summary for a problem's `detail`."""
    first = f"{errors[0]['field']} {errors[0]['message']}"
    more = len(errors) - 1
    if more == 0:
        return first
    return f"{first} (and {more} more {'error' if more == 1 else 'errors'})"


def _event_id_error(value: object) -> str | None:
    if value is None:
        return "is required"
    if not isinstance(value, str):
        return f"must be a string, got {json_type(value)}"
    try:
        uuid.UUID(value)
    except ValueError:
        return "must be a UUID"
    return None


def _text_error(value: object, max_length: int) -> str | None:
    if value is None:
        return "is required"
    if not isinstance(value, str):
        return f"must be a string, got {json_type(value)}"
    if not value.strip():
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters long"
    return character_error(value)


def _time_error(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be an RFC 3339 timestamp string, got {json_type(value)}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "must be an RFC 3339 timestamp"
    if parsed.tzinfo is None:
        return "must be an RFC 3339 timestamp with a UTC offset"
    return None


def _content_type_error(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {json_type(value)}"
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return None
    return "must be application/json: data is delivered as a JSON object"
