import pytest

from services.common.errors import InvalidArgument
from services.users import domain
from services.users.api import to_proto


def invalid(call, *args):
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value.field, str(caught.value)


def test_a_new_user_gets_a_uuid_the_default_role_and_trimmed_fields():
    user = domain.new_user("  Carol ", " carol@example.com ")
    assert len(user.id) == 36
    assert (user.name, user.email, user.roles, user.blocked) == (
        "Carol",
        "carol@example.com",
        ("user",),
        False,
    )
    assert user.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name must not be empty"),
        ("   ", "name must not be empty"),
        ("n" * 101, "name must be at most 100 characters long"),
        ("a\x00b", "name must not contain control characters"),
        ("line\nbreak", "name must not contain control characters"),
        ("\udfffname", "name must not contain lone surrogates"),
    ],
)
def test_names_must_have_1_to_100_printable_characters(name, message):
    assert invalid(domain.valid_name, name) == ("name", message)


def test_a_100_character_name_is_accepted():
    assert domain.valid_name("n" * 100) == "n" * 100


@pytest.mark.parametrize(
    "email",
    ["", "plain", "@example.com", "a@", "a@b", "a b@example.com", "a@@example.com", "a@.com"],
)
def test_emails_must_look_like_an_address(email):
    field, _message = invalid(domain.valid_email, email)
    assert field == "email"


def test_emails_are_limited_to_254_characters():
    longest = "a" * 242 + "@example.com"
    assert domain.valid_email(longest) == longest
    assert invalid(domain.valid_email, "a" + longest) == (
        "email",
        "email must be at most 254 characters long",
    )


@pytest.mark.parametrize("email", ["alice@shopmesh.local", "a.b+tag@mail.example.co.uk"])
def test_ordinary_emails_are_accepted(email):
    assert domain.valid_email(email) == email


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("", "user_id must not be empty"),
        ("x" * 65, "user_id must be at most 64 characters long"),
        ("a\x00", "user_id must not contain control characters"),
        ("a\ud800", "user_id must not contain lone surrogates"),
    ],
)
def test_user_ids_are_checked_before_any_lookup(user_id, message):
    assert invalid(domain.valid_user_id, user_id) == ("user_id", message)


def test_a_block_reason_is_optional_may_span_lines_and_is_limited_to_500_characters():
    assert domain.valid_block_reason("") == ""
    assert domain.valid_block_reason(" spam\nand fraud ") == "spam\nand fraud"
    assert invalid(domain.valid_block_reason, "r" * 501) == (
        "reason",
        "reason must be at most 500 characters long",
    )


def test_the_grpc_user_carries_every_field_and_a_utc_timestamp():
    user = domain.new_user("Alice", "alice@example.com", user_id="alice")
    message = to_proto(user)
    assert (message.id, message.name, message.email, list(message.roles), message.blocked) == (
        "alice",
        "Alice",
        "alice@example.com",
        ["user"],
        False,
    )
    assert message.created_at.ToDatetime().replace(microsecond=0) == user.created_at.replace(
        tzinfo=None, microsecond=0
    )


def test_the_seed_users_are_created_idempotently_by_a_migration():
    from services.common.migrations import load_migrations
    from services.users.app import MIGRATIONS

    migrations = load_migrations(MIGRATIONS.directory)
    assert [m.name for m in migrations] == ["init", "seed_users"]
    seed = migrations[1].sql
    for row in (
        "('alice', 'Alice', 'alice@shopmesh.local', '{user}')",
        "('bob', 'Bob', 'bob@shopmesh.local', '{user}')",
        "('admin', 'Admin', 'admin@shopmesh.local', '{user,admin}')",
    ):
        assert row in seed
    assert "ON CONFLICT DO NOTHING" in seed
