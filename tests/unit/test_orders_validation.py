import json

import pytest
from jsonschema import Draft202012Validator

from services.common import jsonbody
from services.orders import validation
from services.orders.domain import OrderItem, OrderStatus, new_order


def order(**overrides):
    body = {"userId": "alice", "items": [{"productId": "p1", "quantity": 2}]}
    body.update(overrides)
    return body


def item(**overrides):
    entry = {"productId": "p1", "quantity": 1}
    entry.update(overrides)
    return entry


def errors_of(body):
    return validation.create_order_errors(body)


def test_a_valid_order_has_no_errors():
    assert errors_of(order()) == []


def test_the_largest_valid_order_has_no_errors():
    body = order(userId="u" * 64, items=[item(productId="p" * 64, quantity=1000)] * 100)
    assert errors_of(body) == []


def test_missing_user_id_is_reported_by_name():
    body = order()
    del body["userId"]
    assert errors_of(body) == [{"field": "userId", "message": "is required"}]


def test_missing_fields_are_each_reported():
    assert errors_of({}) == [
        {"field": "items", "message": "is required"},
        {"field": "userId", "message": "is required"},
    ]


def test_empty_items_are_refused():
    assert errors_of(order(items=[])) == [
        {"field": "items", "message": "must contain at least 1 item"}
    ]


def test_more_than_one_hundred_items_are_refused():
    assert errors_of(order(items=[item()] * 101)) == [
        {"field": "items", "message": "must contain at most 100 items"}
    ]


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        (0, "must be at least 1"),
        (-1, "must be at least 1"),
        (1001, "must be at most 1000"),
        (1.5, "must be an integer, got a fractional number"),
        (1.0, "must be an integer, got a number with a decimal point or exponent"),
        (1e2, "must be an integer, got a number with a decimal point or exponent"),
        (True, "must be an integer, got boolean"),
        ("2", "must be an integer, got string"),
        (None, "must be an integer, got null"),
    ],
)
def test_quantity_must_be_a_positive_integer(quantity, message):
    assert errors_of(order(items=[item(quantity=quantity)])) == [
        {"field": "items[0].quantity", "message": message}
    ]


def test_a_fractional_quantity_below_one_gets_a_single_message():
    assert errors_of(order(items=[item(quantity=0.5)])) == [
        {"field": "items[0].quantity", "message": "must be an integer, got a fractional number"}
    ]


def test_errors_name_the_item_by_index():
    body = order(items=[item(), item(), item(quantity=0)])
    assert errors_of(body) == [{"field": "items[2].quantity", "message": "must be at least 1"}]


def test_items_are_sorted_numerically_not_as_text():
    items = [item() for _ in range(12)]
    items[2] = item(quantity=0)
    items[10] = item(quantity=0)
    fields = [e["field"] for e in errors_of(order(items=items))]
    assert fields == ["items[2].quantity", "items[10].quantity"]


def test_extra_fields_are_refused_at_every_level():
    body = order(coupon="x", items=[item(price=5)])
    assert errors_of(body) == [
        {"field": "coupon", "message": "is not allowed"},
        {"field": "items[0].price", "message": "is not allowed"},
    ]


def test_empty_and_too_long_strings_are_refused():
    body = order(userId="", items=[item(productId="p" * 65)])
    assert errors_of(body) == [
        {"field": "items[0].productId", "message": "must be at most 64 characters long"},
        {"field": "userId", "message": "must not be empty"},
    ]


def test_wrong_types_say_what_was_expected_and_what_came():
    assert errors_of({"userId": 7, "items": {"productId": "p"}}) == [
        {"field": "items", "message": "must be an array, got object"},
        {"field": "userId", "message": "must be a string, got number"},
    ]
    assert errors_of(order(items=["p1"])) == [
        {"field": "items[0]", "message": "must be an object, got string"}
    ]


def test_an_item_without_product_id_is_reported():
    assert errors_of(order(items=[{"quantity": 1}])) == [
        {"field": "items[0].productId", "message": "is required"}
    ]


def test_user_id_query_values_use_the_same_rules():
    assert validation.user_id_errors("alice") == []
    assert validation.user_id_errors("") == [{"field": "userId", "message": "must not be empty"}]
    assert validation.user_id_errors("a" * 65) == [
        {"field": "userId", "message": "must be at most 64 characters long"}
    ]


def test_detail_summarises_the_first_error_and_counts_the_rest():
    one = [{"field": "userId", "message": "is required"}]
    assert validation.describe(one) == "userId is required"
    three = [*one, {"field": "items", "message": "x"}, {"field": "a", "message": "y"}]
    assert validation.describe(three) == "userId is required (and 2 more errors)"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b'{"userId": ', "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"q": NaN}', "NaN is not a JSON value"),
        (b'{"q": Infinity}', "Infinity is not a JSON value"),
        (b"[1, 2]", "must be a JSON object, got array"),
        (b'"text"', "must be a JSON object, got string"),
        (b"null", "must be a JSON object, got null"),
        (b"[" * 30000 + b"]" * 30000, "nested too deeply"),
        (b'{"userId": "a\\ud800"}', "not valid Unicode text: userId must not contain lone"),
        (b'{"items": [{"p": "\\udc00x"}]}', r"items\[0\]\.p must not contain lone surrogates"),
        (b'{"a": {"\\ud83d": 1}}', "a member name in a must not contain lone surrogates"),
        (b'{"\\ude00\\ud83d": 1}', "a member name in body must not contain lone surrogates"),
    ],
)
def test_bodies_that_are_not_json_objects_are_malformed(raw, reason):
    with pytest.raises(jsonbody.MalformedBodyError, match=reason):
        jsonbody.parse_json_object(raw)


def test_a_surrogate_pair_escape_is_the_one_character_it_encodes():
    assert jsonbody.parse_json_object(b'{"p": "\\ud83d\\ude00"}') == {"p": "\U0001f600"}


CONTROL = "must not contain control characters"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("a\x00", CONTROL),
        ("\x1b[2J", CONTROL),
        ("a\x7f", CONTROL),
        ("tab\t", CONTROL),
        ("\ud800", "must not contain lone surrogates"),
    ],
)
def test_text_fields_are_held_to_the_shared_text_rule(bad, message):
    assert errors_of(order(userId=bad, items=[item(productId=bad)])) == [
        {"field": "items[0].productId", "message": message},
        {"field": "userId", "message": message},
    ]
    assert validation.user_id_errors(bad) == [{"field": "userId", "message": message}]


def test_a_field_the_schema_refuses_reports_only_the_schema_error():
    body = order(userId="u\x00" * 40, extra={"note": "\x00"})
    assert errors_of(body) == [
        {"field": "extra", "message": "is not allowed"},
        {"field": "userId", "message": "must be at most 64 characters long"},
    ]


def test_a_json_object_body_is_parsed():
    assert jsonbody.parse_json_object(json.dumps(order()).encode()) == order()


def test_spec_schemas_are_valid_json_schema():
    for schema in validation.spec()["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_spec_status_enum_matches_the_domain():
    schema = validation.spec()["components"]["schemas"]["OrderStatus"]
    assert schema["enum"] == [status.value for status in OrderStatus]


def test_order_json_matches_the_spec_order_schema():
    order_json = new_order("alice", [OrderItem("p1", 2)]).to_json()
    validator = validation.schema_validator("/components/schemas/Order")
    assert list(validator.iter_errors(order_json)) == []
