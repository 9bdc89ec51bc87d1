import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common import pagination
from services.common.errors import InvalidArgument


def test_a_page_token_round_trips_the_last_position():
    created_at = datetime(2026, 11, 29, 10, 15, 0, 123456, tzinfo=UTC)
    token = pagination.encode_page_token(created_at, "alice")
    assert pagination.decode_page_token(token) == (created_at, "alice")


def test_a_page_token_keeps_the_instant_whatever_the_time_zone():
    created_at = datetime(2026, 11, 29, 13, 15, tzinfo=timezone(timedelta(hours=3)))
    position, _ = pagination.decode_page_token(pagination.encode_page_token(created_at, "x"))
    assert position == created_at


def test_a_page_token_is_url_safe_and_opaque():
    token = pagination.encode_page_token(datetime.now(UTC), "ü/+?")
    assert token.isascii()
    assert not set(token) & set("+/=?&")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "A" * 600,
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'["2026-11-29T10:15:00", "alice"]').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "alice"]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-29T10:15:00+00:00", ""]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-29T10:15:00+00:00", 7]').decode(),
        base64.urlsafe_b64encode(b'["2026-11-29T10:15:00+00:00", "a\\u0000b"]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_token_we_did_not_issue_is_an_invalid_page_token(token):
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_page_token(token)
    assert caught.value.field == "page_token"
    assert str(caught.value).startswith("page_token is not a valid page token")


@pytest.mark.parametrize(("requested", "size"), [(0, 20), (1, 1), (37, 37), (100, 100)])
def test_page_size_zero_means_the_default_and_1_to_100_are_taken_as_asked(requested, size):
    assert pagination.page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, 101, 2**31 - 1])
def test_page_sizes_outside_1_to_100_are_invalid(requested):
    with pytest.raises(InvalidArgument) as caught:
        pagination.page_size(requested)
    assert caught.value.field == "page_size"
    assert "between 1 and 100" in str(caught.value)
