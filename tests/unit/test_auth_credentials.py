"""POST /auth/credentials: an admin sets users' passwords in bulk. The real app and service layer
over the auth API tests' fakes (keys in memory, users that know alice and bob) and a pool that
keeps what it is given (loopback test server, no database)."""

import asyncio
import json
import threading

import pytest

from services.auth import passwords, service
from services.auth.cache import ExchangeCache
from services.auth.clients import UserInfo
from services.auth.credentials import MAX_CREDENTIALS, MAX_USER_ID_LENGTH, Credential
from services.auth.repository import PostgresCredentials
from services.auth.service import AuthService, in_batches
from tests.unit.test_auth_oauth import ISSUER, FakeUsers, MemoryKeys, call, external, internal


def admin() -> dict[str, str]:
    """An admin's headers, minted when used: a token minted at import would expire before a
    test that runs late in a long suite."""
    return {"Authorization": f"Bearer {internal('admin', ['user', 'admin'])}"}


PROBLEM = "application/problem+json"


class StoringPool:
    """Keeps the (username, hash) pairs of every executemany, as one atomic batch each."""

    def __init__(self):
        self.batches = []

    async def executemany(self, _sql, args):
        self.batches.append(list(args))


def auth_service(pool=None, users=None):
    keys, users = MemoryKeys(), users or FakeUsers()
    credentials = PostgresCredentials(pool or StoringPool())
    return AuthService(credentials, keys, users, issuer=ISSUER, cache=ExchangeCache())


def post(body, *, pool=None, users=None, headers=None):
    headers = admin() if headers is None else headers
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(
        "POST",
        "/auth/credentials",
        auth_service(pool, users),
        data=content,
        headers={"Content-Type": "application/json", **headers},
    )


def credentials(*pairs):
    return {"credentials": [{"userId": user, "password": pw} for user, pw in pairs]}


def test_an_admin_sets_passwords_that_then_verify():
    pool = StoringPool()
    status, _, body = post(credentials(("alice", "new-alice"), ("bob", "new\tbob")), pool=pool)
    assert (status, body) == (200, {"updated": 2})
    (batch,) = pool.batches
    assert [user for user, _ in batch] == ["alice", "bob"]
    assert passwords.verify(batch[0][1], "new-alice")
    assert passwords.verify(batch[1][1], "new\tbob")


@pytest.mark.parametrize(
    ("token", "status", "problem"),
    [
        (lambda: None, 401, "/problems/unauthenticated"),
        (lambda: external("admin"), 401, "/problems/unauthenticated"),
        (lambda: internal("alice", ["user"]), 403, "/problems/forbidden"),
        (lambda: internal("orders", ["service"]), 403, "/problems/forbidden"),
    ],
)
def test_setting_passwords_needs_an_internal_token_with_the_admin_role(token, status, problem):
    pool = StoringPool()
    minted = token()
    headers = {} if minted is None else {"Authorization": f"Bearer {minted}"}
    got, response_headers, body = post(credentials(("alice", "pw")), pool=pool, headers=headers)
    assert (got, body["type"]) == (status, problem)
    assert response_headers["Content-Type"].startswith(PROBLEM)
    assert pool.batches == []


def test_unknown_user_ids_are_a_404_problem_naming_them_and_nothing_is_set():
    pool = StoringPool()
    body = credentials(("alice", "a"), ("carol", "c"), ("bob", "b"), ("dave", "d"))
    status, headers, problem = post(body, pool=pool)
    assert (status, problem["type"]) == (404, "/problems/unknown-user")
    assert headers["Content-Type"].startswith(PROBLEM)
    assert "'carol', 'dave'" in problem["detail"]
    assert [error["field"] for error in problem["errors"]] == [
        "credentials[1].userId",
        "credentials[3].userId",
    ]
    assert pool.batches == []


def test_a_404_detail_names_a_few_unknown_ids_and_its_errors_all_of_them():
    status, _, problem = post(credentials(*[(f"ghost-{i}", "pw") for i in range(8)]))
    assert status == 404
    assert "'ghost-4' and 3 more" in problem["detail"]
    assert len(problem["errors"]) == 8


def test_users_being_down_is_a_503_problem_and_nothing_is_set():
    pool = StoringPool()
    status, headers, problem = post(
        credentials(("alice", "pw")), pool=pool, users=FakeUsers(down=True)
    )
    assert (status, problem["type"], headers["Retry-After"]) == (503, "/problems/unavailable", "1")
    assert pool.batches == []


def test_a_thousand_credentials_fit_in_one_body():
    """About 50 KiB, over the 16 KiB every other route of auth takes: read, checked, refused
    here only because none of the ids is a user (so nothing is hashed)."""
    body = credentials(*[(f"{i:036d}", "p" * 16) for i in range(MAX_CREDENTIALS)])
    status, _, problem = post(body)
    assert (status, len(problem["errors"])) == (404, MAX_CREDENTIALS)


def test_a_body_over_the_limit_is_a_413_problem():
    body = credentials(*[(f"user-{i}", "p" * 1024) for i in range(MAX_CREDENTIALS * 2)])
    status, headers, _ = post(body)
    assert status == 413
    assert headers["Content-Type"].startswith(PROBLEM)


def one(**fields):
    return {"credentials": [{"userId": "alice", "password": "pw", **fields}]}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "credentials", "is required"),
        ({"credentials": []}, "credentials", "1 to 1000 credentials, got 0"),
        ({"credentials": {"userId": "alice"}}, "credentials", "got object"),
        (
            credentials(*[(f"u{i}", "pw") for i in range(MAX_CREDENTIALS + 1)]),
            "credentials",
            "got 1001",
        ),
        ({"credentials": ["alice"]}, "credentials[0]", "must be an object, got string"),
        ({"credentials": [{"password": "pw"}]}, "credentials[0].userId", "got null"),
        (one(userId=7), "credentials[0].userId", "must be a string, got number"),
        (one(userId=""), "credentials[0].userId", "must not be empty"),
        (one(userId="alice\x00"), "credentials[0].userId", "control characters"),
        (one(userId="u" * (MAX_USER_ID_LENGTH + 1)), "credentials[0].userId", "at most 64"),
        (one(password=""), "credentials[0].password", "must not be empty"),
        (one(password=None), "credentials[0].password", "must be a string, got null"),
        (one(password="pw\x00"), "credentials[0].password", "control characters"),
        (one(password="pw\n"), "credentials[0].password", "control characters"),
        (one(password="é" * 513), "credentials[0].password", "at most 1024 bytes"),
        (one(user_id="alice"), "credentials[0].user_id", "is not a known member"),
        ({**one(), "dryRun": True}, "dryRun", "is not a known member"),
        (
            credentials(("alice", "a"), ("bob", "b"), ("alice", "c")),
            "credentials[2].userId",
            "repeats credentials[0].userId",
        ),
    ],
)
def test_a_body_that_breaks_a_rule_is_a_422_problem_naming_the_field(body, field, message):
    pool = StoringPool()
    status, _, problem = post(body, pool=pool)
    assert (status, problem["type"]) == (422, "/problems/validation"), problem
    error = next(e for e in problem["errors"] if e["field"] == field)
    assert message in error["message"]
    assert pool.batches == []


def test_every_broken_field_is_listed():
    body = {"credentials": [{"userId": "", "password": ""}, {"userId": "bob", "password": 1}]}
    _, _, problem = post(body)
    assert [e["field"] for e in problem["errors"]] == [
        "credentials[0].userId",
        "credentials[0].password",
        "credentials[1].password",
    ]
    assert problem["detail"].endswith("(and 2 more errors)")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"credentials": [{"userId": "alice", "password": "\\ud800"}]}', "application/json"),
        (b'{"credentials": [', "application/json"),
        (b"userId=alice&password=pw", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_that_is_no_json_object_of_text_is_a_400_problem(raw, content_type):
    status, _, problem = call(
        "POST",
        "/auth/credentials",
        auth_service(),
        data=raw,
        headers={"Content-Type": content_type, **admin()},
    )
    assert (status, problem["type"]) == (400, "/problems/malformed-request")


class EveryoneIsAUser(FakeUsers):
    async def get_user(self, user_id):
        return UserInfo(user_id, frozenset({"user"}), False)


def test_hashing_runs_a_few_at_a_time_and_keeps_the_request_order(monkeypatch):
    lock, running, most, calls = threading.Lock(), 0, 0, 0
    first_batch = threading.Barrier(service.HASHES_AT_ONCE, timeout=30)

    def slow_hash(secret):
        nonlocal running, most, calls
        with lock:
            running += 1
            most = max(most, running)
            calls += 1
            in_first_batch = calls <= service.HASHES_AT_ONCE
        if in_first_batch:
            first_batch.wait()
        with lock:
            running -= 1
        return f"hash-of-{secret}"

    monkeypatch.setattr(passwords, "hash_secret", slow_hash)
    pool = StoringPool()
    users = [Credential(f"user-{i}", f"pw-{i}") for i in range(7)]
    asyncio.run(auth_service(pool, EveryoneIsAUser()).set_passwords(users))
    assert pool.batches == [[(c.user_id, f"hash-of-{c.password}") for c in users]]
    assert most == service.HASHES_AT_ONCE


def test_in_batches_keeps_item_order_and_runs_at_most_a_batch_at_once():
    running, most = 0, 0

    async def double(item):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001 * (5 - item % 5))
        running -= 1
        return item * 2

    assert asyncio.run(in_batches(list(range(12)), 4, double)) == [i * 2 for i in range(12)]
    assert most == 4
