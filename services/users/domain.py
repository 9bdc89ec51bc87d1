"""Users: the model and its rules. Plain Python, no I/O."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common import fields
from services.common.errors import InvalidArgument

MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254
MAX_USER_ID_LENGTH = 64
MAX_BLOCK_REASON_LENGTH = 500
MAX_BATCH_USERS = 1000
DEFAULT_ROLES = ("user",)

# A shape check, not RFC 5322: something@domain.tld, no spaces, one "@".
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


@dataclass(frozen=True)
class User:
    id: str
    name: str
    email: str
    roles: tuple[str, ...]
    blocked: bool
    blocked_reason: str | None
    created_at: datetime


def new_user(
    name: str, email: str, *, user_id: str | None = None, now: datetime | None = None
) -> User:
    """A user to create, with validated fields and the default roles."""
    return User(
        id=user_id or str(uuid.uuid4()),
        name=valid_name(name),
        email=valid_email(email),
        roles=DEFAULT_ROLES,
        blocked=False,
        blocked_reason=None,
        created_at=now or datetime.now(UTC),
    )


def new_users(requests: Sequence[tuple[str, str]]) -> list[User]:
    """The users of one batch, from (name, email) pairs: 1..1000 of them, each as `new_user`
    makes it, no email twice (in any letter case). A field error names its request,
    `requests[3].email`."""
    if not 1 <= len(requests) <= MAX_BATCH_USERS:
        raise InvalidArgument("requests", f"must hold 1 to {MAX_BATCH_USERS} users")
    users: list[User] = []
    first_with_email: dict[str, int] = {}
    for index, (name, email) in enumerate(requests):
        try:
            user = new_user(name, email)
        except InvalidArgument as exc:
            raise InvalidArgument(f"requests[{index}].{exc.field}", exc.message) from None
        first = first_with_email.setdefault(user.email.lower(), index)
        if first != index:
            raise InvalidArgument(f"requests[{index}].email", f"repeats requests[{first}].email")
        users.append(user)
    return users


def valid_name(name: str) -> str:
    """`name` without surrounding whitespace; 1..100 characters."""
    return fields.text("name", name.strip(), max_length=MAX_NAME_LENGTH)


def valid_email(email: str) -> str:
    """`email` without surrounding whitespace; shaped like name@example.com, ≤ 254 characters."""
    email = fields.text("email", email.strip(), max_length=MAX_EMAIL_LENGTH)
    if not _EMAIL_SHAPE.fullmatch(email):
        raise InvalidArgument("email", "must be an email address like name@example.com")
    return email


def valid_user_id(user_id: str, *, field: str = "user_id") -> str:
    return fields.text(field, user_id, max_length=MAX_USER_ID_LENGTH)


def valid_block_reason(reason: str) -> str:
    """The reason without surrounding whitespace; optional, at most 500 characters."""
    return fields.text(
        "reason",
        reason.strip(),
        max_length=MAX_BLOCK_REASON_LENGTH,
        required=False,
        multiline=True,
    )
