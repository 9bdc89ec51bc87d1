"""The body of POST /auth/credentials: passwords for users, set by an admin in bulk.

    {"credentials": [{"userId": "<id in users>", "password": "<password>"}, ...]}

1..1000 credentials, no userId twice. A userId follows users' rule for ids (1..64 characters);
a password is 1..MAX_SECRET_BYTES bytes of UTF-8 without control characters but TAB, as the
password grant takes it (RFC 6749 Appendix A). Every text already passed the JSON body's own
check (services.common.jsonbody: no lone surrogates anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.auth.passwords import MAX_SECRET_BYTES
from services.common.errors import InvalidArgument
from services.common.fields import character_error, text
from services.common.jsonbody import JsonPath, field_name, json_type

MAX_CREDENTIALS = 1000
# users' rule for ids (services/users/domain.py).
MAX_USER_ID_LENGTH = 64
# 1000 credentials with room for long passwords; the app's other routes take 16 KiB.
MAX_BODY_BYTES = 2 * 1024 * 1024

BODY_MEMBERS = frozenset({"credentials"})
CREDENTIAL_MEMBERS = frozenset({"userId", "password"})

FieldError = dict[str, str]


@dataclass(frozen=True)
class Credential:
    user_id: str
    password: str = field(repr=False)


class CredentialErrors(Exception):
    """The body breaks the rules; `errors` has one entry per field, as problems list them."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(describe(errors))
        self.errors = errors


def parse_credentials(body: dict[str, Any]) -> list[Credential]:
    """The credentials of a decoded JSON body, in body order; CredentialErrors lists every
    field that breaks a rule."""
    errors = _unknown_members(body, BODY_MEMBERS, ())
    items = body.get("credentials")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CREDENTIALS:
        raise CredentialErrors([*errors, _error(("credentials",), _items_message(body))])
    credentials = []
    first_of: dict[str, int] = {}
    for index, item in enumerate(items):
        path = ("credentials", index)
        credential = _credential(item, path, errors)
        if credential is None:
            continue
        first = first_of.setdefault(credential.user_id, index)
        if first != index:
            errors.append(_error((*path, "userId"), f"repeats credentials[{first}].userId"))
        credentials.append(credential)
    if errors:
        raise CredentialErrors(errors)
    return credentials


def describe(errors: Sequence[FieldError]) -> str:
    """A one-line summary for a problem's `detail`."""
    first = f"{errors[0]['field']} {errors[0]['message']}"
    more = len(errors) - 1
    if not more:
        return first
    return f"{first} (and {more} more {'error' if more == 1 else 'errors'})"


def _items_message(body: dict[str, Any]) -> str:
    if "credentials" not in body:
        return "is required"
    items = body["credentials"]
    got = len(items) if isinstance(items, list) else json_type(items)
    return f"must be an array of 1 to {MAX_CREDENTIALS} credentials, got {got}"


def _credential(item: object, path: JsonPath, errors: list[FieldError]) -> Credential | None:
    """The credential at `path`, or None with its errors appended to `errors`."""
    if not isinstance(item, dict):
        errors.append(_error(path, f"must be an object, got {json_type(item)}"))
        return None
    found = _unknown_members(item, CREDENTIAL_MEMBERS, path)
    user_id = _user_id(item.get("userId"), (*path, "userId"), found)
    password = _password(item.get("password"), (*path, "password"), found)
    errors.extend(found)
    if found:
        return None
    return Credential(user_id, password)


def _user_id(value: object, path: JsonPath, errors: list[FieldError]) -> str:
    if not isinstance(value, str):
        errors.append(_error(path, f"must be a string, got {json_type(value)}"))
        return ""
    try:
        return text(field_name(path), value, max_length=MAX_USER_ID_LENGTH)
    except InvalidArgument as exc:
        errors.append(_error(path, exc.message))
        return ""


def _password(value: object, path: JsonPath, errors: list[FieldError]) -> str:
    if not isinstance(value, str):
        errors.append(_error(path, f"must be a string, got {json_type(value)}"))
    elif not value:
        errors.append(_error(path, "must not be empty"))
    elif len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        errors.append(_error(path, f"must be at most {MAX_SECRET_BYTES} bytes of UTF-8"))
    elif (problem := character_error(value, allowed="\t")) is not None:
        errors.append(_error(path, problem))
    else:
        return value
    return ""


def _unknown_members(
    value: dict[str, Any], known: frozenset[str], path: JsonPath
) -> list[FieldError]:
    return [_error((*path, name), "is not a known member") for name in value if name not in known]


def _error(path: JsonPath, message: str) -> FieldError:
    return {"field": field_name(path), "message": message}
