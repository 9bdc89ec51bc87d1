"""BatchCreateUsers: the use case over a users database in memory (a unique email in any letter
case, transactions that commit or roll back, the outbox table), and the servicer's
authorization over the real interceptor chain."""

import asyncio
import contextlib
import json
from datetime import UTC, datetime

import grpc
import pytest

from contracts import EventType, Topic
from services.auth.tokens import internal_claims, sign
from services.common.errors import AlreadyExists, InvalidArgument
from services.users.domain import MAX_BATCH_USERS, User
from services.users.repository import PostgresUsersDatabase
from services.users.service import UserService
from shopmesh.users.v1 import users_pb2, users_pb2_grpc
from tests.unit.test_grpc_chain import KEY, admin, run


class UsersDatabase:
    """Rows of users and outbox; a transaction keeps its writes only if it ends without error."""

    def __init__(self, taken_emails=()):
        self.emails = {email.lower() for email in taken_emails}
        self.users: list[dict] = []
        self.outbox: list[dict] = []
        self.transactions = 0
        self._pending: tuple[list, list] | None = None

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self

    @contextlib.asynccontextmanager
    async def transaction(self):
        self.transactions += 1
        self._pending = ([], [])
        try:
            yield
        except BaseException:
            self._pending = None
            raise
        users, events = self._pending
        self._pending = None
        self.users += users
        self.outbox += events
        self.emails |= {user["email"].lower() for user in users}

    def is_in_transaction(self):
        return self._pending is not None

    async def fetchrow(self, _sql, *args):
        """INSERT INTO users ... ON CONFLICT ((lower(email))) DO NOTHING RETURNING ..."""
        columns = ("id", "name", "email", "roles", "blocked", "blocked_reason", "created_at")
        row = dict(zip(columns, args, strict=True))
        pending_users = self._pending[0]
        if row["email"].lower() in self.emails | {u["email"].lower() for u in pending_users}:
            return None
        pending_users.append(row)
        return row

    async def execute(self, _sql, event_id, topic, key, payload, _headers, _channel, _hold_s):
        """The outbox insert."""
        self._pending[1].append({"topic": topic, "key": key, "event": json.loads(payload)})
        return "SELECT 1"


def batch(*emails):
    return [(f"User {i}", email) for i, email in enumerate(emails)]


def create(db, requests):
    return asyncio.run(UserService(PostgresUsersDatabase(db)).batch_create_users(requests))


def test_a_batch_creates_every_user_in_request_order_each_with_its_event_in_one_transaction():
    db = UsersDatabase()
    created = create(db, batch("c@example.com", "a@example.com", "b@example.com"))
    assert [user.email for user in created] == ["c@example.com", "a@example.com", "b@example.com"]
    assert all(user.roles == ("user",) and not user.blocked for user in created)
    assert db.transactions == 1
    assert [row["id"] for row in db.users] == [user.id for user in created]
    assert [(e["topic"], e["key"], e["event"]["type"]) for e in db.outbox] == [
        (Topic.USER_EVENTS, user.id, EventType.USER_CREATED) for user in created
    ]
    assert [e["event"]["data"]["userId"] for e in db.outbox] == [user.id for user in created]


def test_a_taken_email_is_already_exists_naming_it_and_no_user_of_the_batch_is_created():
    db = UsersDatabase(taken_emails={"alice@shopmesh.local"})
    with pytest.raises(AlreadyExists) as caught:
        create(db, batch("new@example.com", "Alice@Shopmesh.local", "other@example.com"))
    assert str(caught.value) == "a user with the email 'Alice@Shopmesh.local' already exists"
    assert (db.users, db.outbox) == ([], [])


def test_an_email_twice_in_one_batch_in_any_letter_case_names_both_requests():
    with pytest.raises(InvalidArgument) as caught:
        create(UsersDatabase(), batch("a@example.com", "b@example.com", "B@Example.com"))
    assert str(caught.value) == "requests[2].email repeats requests[1].email"


@pytest.mark.parametrize("count", [0, MAX_BATCH_USERS + 1])
def test_a_batch_holds_1_to_1000_users(count):
    requests = batch(*(f"u{i}@example.com" for i in range(count)))
    with pytest.raises(InvalidArgument) as caught:
        create(UsersDatabase(), requests)
    assert caught.value.field == "requests"


def test_a_field_that_breaks_a_rule_names_its_request():
    db = UsersDatabase()
    with pytest.raises(InvalidArgument) as caught:
        create(db, [("Ann", "ann@example.com"), ("Bob", "not an email")])
    assert caught.value.field == "requests[1].email"
    assert db.transactions == 0


def test_a_thousand_users_is_one_batch():
    db = UsersDatabase()
    created = create(db, batch(*(f"u{i}@example.com" for i in range(MAX_BATCH_USERS))))
    assert (len(created), len(db.outbox), db.transactions) == (MAX_BATCH_USERS, MAX_BATCH_USERS, 1)


# --- the servicer ----------------------------------------------------------------------------


class CreatingUsers:
    async def batch_create_users(self, requests):
        now = datetime.now(UTC)
        return [
            User(f"id-{i}", name, email, ("user",), False, None, now)
            for i, (name, email) in enumerate(requests)
        ]


def token_of(sub, roles):
    claims = internal_claims(sub=sub, roles=roles, now=int(datetime.now(UTC).timestamp()))
    return (("authorization", f"Bearer {sign(claims, KEY)}"),)


def batch_create(metadata):
    async def scenario(channel):
        stub = users_pb2_grpc.UserServiceStub(channel)
        request = users_pb2.BatchCreateUsersRequest(
            requests=[
                users_pb2.CreateUserRequest(name="Ann", email="ann@example.com"),
                users_pb2.CreateUserRequest(name="Bob", email="bob@example.com"),
            ]
        )
        try:
            response = await stub.BatchCreateUsers(request, timeout=5, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return [(user.id, user.email) for user in response.users]

    return run(CreatingUsers(), scenario)


def test_an_admin_batch_creates_users_answered_in_request_order():
    assert batch_create(admin()) == [("id-0", "ann@example.com"), ("id-1", "bob@example.com")]


@pytest.mark.parametrize(("sub", "roles"), [("alice", ["user"]), ("auth", ["service"])])
def test_only_an_admin_may_batch_create_users(sub, roles):
    assert batch_create(token_of(sub, roles)) == grpc.StatusCode.PERMISSION_DENIED
