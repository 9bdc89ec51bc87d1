"""The users use cases on in-memory fakes: users created (one or a batch) and blocked, with the
UserCreated / UserBlocked events their units of work commit, and reads."""

from __future__ import annotations

import asyncio

import pytest

from contracts import EventType, Topic
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.messaging.envelope import validate
from services.orders.domain import OrderStatus
from services.users.domain import DEFAULT_ROLES
from services.users.service import UserService
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.database import OutboxMessage
from tests.unit.fakes.users import InMemoryUsersDatabase
from tests.unit.test_orders_use_cases import Orders
from tests.unit.test_payments_use_cases import Payments


class Users:
    def __init__(self) -> None:
        self.db = InMemoryUsersDatabase()
        self.service = UserService(self.db)

    def events(self) -> list[OutboxMessage]:
        assert {message.topic for message in self.db.tables.outbox} <= {Topic.USER_EVENTS}
        return self.db.tables.outbox


@in_a_loop
async def test_a_created_user_has_the_default_roles_and_a_user_created_event():
    users = Users()
    user = await users.service.create_user("  Alice  ", "alice@example.com")
    assert (user.name, user.roles, user.blocked) == ("Alice", DEFAULT_ROLES, False)
    assert users.db.tables.users == {user.id: user}
    (event,) = users.events()
    assert (event.key, event.type) == (user.id, EventType.USER_CREATED)
    assert event.data == {"userId": user.id, "name": "Alice", "roles": list(DEFAULT_ROLES)}


@in_a_loop
async def test_an_email_taken_in_any_letter_case_is_already_exists_and_adds_no_event():
    users = Users()
    await users.service.create_user("Alice", "alice@example.com")
    with pytest.raises(AlreadyExists, match=r"ALICE@example\.com"):
        await users.service.create_user("Other", "ALICE@example.com")
    assert len(users.db.tables.users) == 1
    assert [event.type for event in users.events()] == [EventType.USER_CREATED]


@in_a_loop
async def test_two_concurrent_creations_with_one_email_create_one_user():
    users = Users()
    outcomes = await asyncio.gather(
        users.service.create_user("A", "same@example.com"),
        users.service.create_user("B", "Same@example.com"),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["AlreadyExists", "User"]
    assert len(users.db.tables.users) == len(users.events()) == 1


@in_a_loop
async def test_invalid_fields_are_refused_before_anything_is_stored():
    users = Users()
    with pytest.raises(InvalidArgument):
        await users.service.create_user("Alice", "not an email")
    assert users.db.tables.users == {}
    assert users.db.transactions.committed == 0


@in_a_loop
async def test_a_batch_creates_its_users_in_request_order_in_one_unit_of_work():
    users = Users()
    created = await users.service.batch_create_users(
        [("C", "c@example.com"), ("A", "a@example.com"), ("B", "b@example.com")]
    )
    assert [user.name for user in created] == ["C", "A", "B"]
    assert [event.data["userId"] for event in users.events()] == [user.id for user in created]
    assert users.db.transactions.committed == 1


@in_a_loop
async def test_a_batch_with_one_taken_email_creates_none_of_its_users_and_no_event():
    users = Users()
    await users.service.create_user("Taken", "taken@example.com")
    with pytest.raises(AlreadyExists, match=r"TAKEN@example\.com"):
        await users.service.batch_create_users(
            [("New", "new@example.com"), ("Clash", "TAKEN@example.com")]
        )
    assert [user.name for user in users.db.tables.users.values()] == ["Taken"]
    assert len(users.events()) == 1
    assert users.db.transactions.rolled_back == 1


@in_a_loop
async def test_blocking_a_user_stores_the_reason_and_queues_one_user_blocked_event():
    users = Users()
    user = await users.service.create_user("Mallory", "mallory@example.com")
    blocked = await users.service.block_user(user.id, "  chargebacks  ")
    assert (blocked.blocked, blocked.blocked_reason) == (True, "chargebacks")
    assert users.db.tables.users[user.id] == blocked
    assert [(e.key, e.type) for e in users.events()] == [
        (user.id, EventType.USER_CREATED),
        (user.id, EventType.USER_BLOCKED),
    ]
    assert users.events()[-1].data == {"userId": user.id, "reason": "chargebacks"}


@in_a_loop
async def test_a_block_without_a_reason_stores_none_and_says_an_empty_reason():
    users = Users()
    user = await users.service.create_user("Mallory", "mallory@example.com")
    blocked = await users.service.block_user(user.id, "   ")
    assert blocked.blocked_reason is None
    assert users.events()[-1].data == {"userId": user.id, "reason": ""}


@in_a_loop
async def test_blocking_a_blocked_user_answers_it_unchanged_without_another_event():
    users = Users()
    user = await users.service.create_user("Mallory", "mallory@example.com")
    first = await users.service.block_user(user.id, "first")
    again = await users.service.block_user(user.id, "second")
    assert again == first
    assert [event.type for event in users.events()] == [
        EventType.USER_CREATED,
        EventType.USER_BLOCKED,
    ]


@in_a_loop
async def test_two_concurrent_blocks_of_one_user_queue_one_event():
    users = Users()
    user = await users.service.create_user("Mallory", "mallory@example.com")
    await asyncio.gather(*(users.service.block_user(user.id, "fraud") for _ in range(2)))
    assert [event.type for event in users.events()] == [
        EventType.USER_CREATED,
        EventType.USER_BLOCKED,
    ]


@in_a_loop
async def test_blocking_an_unknown_user_is_not_found_and_queues_nothing():
    users = Users()
    with pytest.raises(NotFound):
        await users.service.block_user("nobody", "fraud")
    assert users.events() == []


@in_a_loop
async def test_a_user_is_read_by_id_and_an_unknown_or_invalid_id_is_refused():
    users = Users()
    user = await users.service.create_user("Alice", "alice@example.com")
    assert await users.service.get_user(user.id) == user
    with pytest.raises(NotFound):
        await users.service.get_user("nobody")
    with pytest.raises(InvalidArgument):
        await users.service.get_user("")


@in_a_loop
async def test_users_are_listed_in_pages_oldest_first():
    users = Users()
    created = await users.service.batch_create_users(
        [(f"User {i}", f"u{i}@example.com") for i in range(3)]
    )
    first = await users.service.list_users(2, "")
    second = await users.service.list_users(2, first.next_page_token)
    in_order = sorted(created, key=lambda user: (user.created_at, user.id))
    assert (first.users, second.users, second.next_page_token) == (in_order[:2], in_order[2:], "")


@in_a_loop
async def test_the_block_event_cancels_the_users_queued_orders_and_refuses_new_payments():
    users, orders, payments = Users(), Orders(), Payments()
    user = await users.service.create_user("Mallory", "mallory@example.com")
    queued = await orders.place(user.id, respond_async=True)
    await users.service.block_user(user.id, "fraud")
    blocked = validate(users.events()[-1].event)
    await orders.consume(blocked)
    await payments.consume(blocked)
    assert orders.db.stored(queued.id).status == OrderStatus.CANCELLED
    assert payments.db.tables.blocked_users == {user.id}
