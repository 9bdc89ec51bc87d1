"""Request validation against the service's own OpenAPI document.

The schemas come from openapi.yaml (OpenAPI 3.1 schemas are JSON Schema 2020-12), so the
published contract and the checks the service makes cannot drift apart. Each violation becomes
`{"field": "items[0].quantity", "message": "..."}`. Every string is also held to the text rule
all services share (services.common.fields: no control characters, no lone surrogates), which
JSON Schema cannot express.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from services.common.fields import character_error
from services.common.jsonbody import JsonPath, field_name, json_type, texts

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
_SPEC_URI = "urn:shopmesh:orders:openapi"

FieldError = dict[str, str]


def _is_strict_integer(_checker: object, instance: object) -> bool:
    # JSON Schema counts 1.0 as an integer; an order quantity must be written as one.
    return isinstance(instance, int) and not isinstance(instance, bool)


# The stubs leave validators.extend untyped; it makes a validator class, as create() does.
StrictValidator: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)


@cache
def spec_text() -> str:
    return SPEC_PATH.read_text("utf-8")


@cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(spec_text())
    return document


@cache
def schema_validator(pointer: str) -> Validator:
    """A validator for the schema at JSON pointer `pointer` inside openapi.yaml."""
    registry = Registry().with_resource(_SPEC_URI, DRAFT202012.create_resource(spec()))
    return StrictValidator({"$ref": f"{_SPEC_URI}#{pointer}"}, registry=registry)


def create_order_errors(payload: dict[str, Any]) -> list[FieldError]:
    """Violations of the CreateOrderRequest schema, one per field, sorted by field."""
    return _field_errors(schema_validator("/components/schemas/CreateOrderRequest"), payload, ())


def user_id_errors(value: str) -> list[FieldError]:
    """Violations of the userId schema (shared by the query parameter and the body)."""
    pointer = "/components/schemas/CreateOrderRequest/properties/userId"
    return _field_errors(schema_validator(pointer), value, ("userId",))


def describe(errors: Sequence[FieldError]) -> str:
    """A one-line summary for a problem's `detail`."""
    first = f"{errors[0]['field']} {errors[0]['message']}"
    if len(errors) == 1:
        return first
    more = len(errors) - 1
    return f"{first} (and {more} more {'error' if more == 1 else 'errors'})"


def _field_errors(
    validator: Validator, instance: dict[str, Any] | str, prefix: JsonPath
) -> list[FieldError]:
    """One message per field: type errors before other schema errors, and the text rule only
    where the schema found nothing wrong."""
    found: list[tuple[JsonPath, int, str]] = []
    for error in validator.iter_errors(instance):
        for path, message in _explain(error):
            rank = 0 if error.validator == "type" else 1
            found.append(((*prefix, *path), rank, message))
    refused = {path for path, _rank, _message in found}
    for path, message in _character_errors(instance):
        full = (*prefix, *path)
        if not any(full[:length] in refused for length in range(len(full) + 1)):
            found.append((full, 2, message))
    found.sort(key=lambda entry: (_sort_key(entry[0]), entry[1]))
    result: dict[str, str] = {}
    for path, _rank, message in found:
        result.setdefault(field_name(path), message)
    return [{"field": field, "message": message} for field, message in result.items()]


def _character_errors(instance: object) -> Iterator[tuple[JsonPath, str]]:
    """(path, message) for each string value that breaks the shared text rule."""
    for path, text, is_member_name in texts(instance):
        if not is_member_name and (message := character_error(text)) is not None:
            yield path, message


def _explain(error: ValidationError) -> Iterator[tuple[JsonPath, str]]:
    """(path, message) pairs for one jsonschema error; some errors name several fields."""
    path = tuple(error.absolute_path)
    keyword = error.validator
    # JSON from the schema and from the request. (The stubs also allow them unset, as in an
    # error made by hand; iter_errors sets them all.)
    expected: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if keyword == "required":
        for name in expected:
            if name not in instance:
                yield (*path, name), "is required"
    elif keyword == "additionalProperties":
        allowed = schema.get("properties", {})
        for name in instance:
            if name not in allowed:
                yield (*path, name), "is not allowed"
    elif keyword == "type":
        yield path, _type_message(expected, instance)
    elif keyword == "minimum":
        yield path, f"must be at least {expected}"
    elif keyword == "maximum":
        yield path, f"must be at most {expected}"
    elif keyword == "minLength":
        yield (
            path,
            "must not be empty"
            if expected == 1
            else f"must be at least {expected} characters long",
        )
    elif keyword == "maxLength":
        yield path, f"must be at most {expected} characters long"
    elif keyword == "minItems":
        yield path, f"must contain at least {expected} item{'' if expected == 1 else 's'}"
    elif keyword == "maxItems":
        yield path, f"must contain at most {expected} items"
    else:
        yield path, error.message


def _type_message(expected: object, instance: object) -> str:
    wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
    article = "an" if wanted[0] in "aeiou" else "a"
    if wanted == "integer" and isinstance(instance, float) and instance.is_integer():
        return "must be an integer, got a number with a decimal point or exponent"
    if wanted == "integer" and isinstance(instance, float):
        return "must be an integer, got a fractional number"
    return f"must be {article} {wanted}, got {json_type(instance)}"


def _sort_key(path: JsonPath) -> tuple[tuple[int, str | int], ...]:
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in path)
