"""The auth use cases on in-memory fakes: signing keys made, rotated and picked up across
instances (KeyStore over its unit of work), the password and client_credentials grants, token
exchange, passwords set by an admin, and UserBlocked dropping cached exchanges."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from jose import jwt

from contracts import EventType
from contracts.cloudevents import cloud_event
from services.auth import keys as signing_keys
from services.auth.cache import ExchangeCache
from services.auth.credentials import Credential
from services.auth.keys import RETIRED_KEY_KEPT, KeyStore
from services.auth.oauth import PUBLIC_CLIENT_ID, ClientCredentials
from services.auth.service import (
    AuthService,
    InvalidClient,
    InvalidCredentials,
    UnknownSubject,
    UnknownUsers,
    UserBlocked,
)
from services.auth.tokens import (
    GTY_CLIENT_CREDENTIALS,
    GTY_PASSWORD,
    RETIRED_KEY_PUBLISHED,
    SigningKey,
    generate_signing_key,
)
from services.common.auth.jwt import verify_internal_claims
from services.common.auth.principal import Unauthenticated
from services.common.errors import Unavailable
from services.common.messaging.envelope import validate
from tests.unit.fakes import in_a_loop
from tests.unit.fakes.auth import FakeUsersDirectory, InMemoryCredentials, InMemoryKeysDatabase

ISSUER = "https://auth.test"


@functools.cache
def premade_keys() -> tuple[SigningKey, ...]:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    return tuple(generate_signing_key(epoch) for _ in range(4))


@pytest.fixture(autouse=True)
def quick_keys(monkeypatch):
    """RSA key generation takes a while: new keys come from a few made once."""
    keys = iter(premade_keys())
    monkeypatch.setattr(
        signing_keys, "generate_signing_key", lambda now: replace(next(keys), created_at=now)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Auth:
    """One auth instance; instances made with `another()` share the keys and the credentials."""

    def __init__(
        self,
        keys_db: InMemoryKeysDatabase | None = None,
        credentials: InMemoryCredentials | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.keys_db = keys_db or InMemoryKeysDatabase()
        self.credentials = credentials or InMemoryCredentials()
        self.keys = KeyStore(self.keys_db, clock=self.clock)
        self.users = FakeUsersDirectory(alice=["user"], root=["user", "admin"])
        self.service = AuthService(
            self.credentials,
            self.keys,
            self.users,
            issuer=ISSUER,
            cache=ExchangeCache(clock=self.clock),
            clock=self.clock,
        )

    def another(self) -> Auth:
        return Auth(self.keys_db, self.credentials, self.clock)

    async def started(self) -> Auth:
        await self.keys.ensure_active_key()
        return self

    async def login(self, username: str = "alice", password: str = "secret") -> str:
        self.credentials.set_password(username, password)
        issued = await self.service.password_grant(username, password, ("shopmesh",), None)
        return issued.token


def basic(client_id: str, secret: str) -> ClientCredentials:
    return ClientCredentials(client_id, secret, "client_secret_basic")


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


# --- signing keys --------------------------------------------------------------------------


@in_a_loop
async def test_the_first_start_creates_an_active_key_under_the_keys_lock_and_publishes_it():
    auth = await Auth().started()
    (key,) = auth.keys_db.tables.keys.values()
    assert key.retired_at is None
    assert auth.keys_db.statements == ["lock", "active_kid", "add", "published"]
    assert [jwk["kid"] for jwk in auth.keys.jwks()["keys"]] == [key.kid]


@in_a_loop
async def test_instances_starting_together_make_one_key():
    first = Auth()
    others = [first.another() for _ in range(2)]
    await asyncio.gather(*(auth.keys.ensure_active_key() for auth in [first, *others]))
    assert len(first.keys_db.tables.keys) == 1
    assert {auth.keys.ring.active.kid for auth in [first, *others]} == set(
        first.keys_db.tables.keys
    )


@in_a_loop
async def test_a_restart_keeps_the_active_key():
    auth = await Auth().started()
    restarted = await auth.another().started()
    assert restarted.keys.ring.active.kid == auth.keys.ring.active.kid
    assert len(auth.keys_db.tables.keys) == 1


@in_a_loop
async def test_a_rotated_out_key_still_verifies_its_tokens_for_an_hour_then_leaves_the_jwks():
    auth = await Auth().started()
    token = await auth.login()
    new_key, retired = await auth.service.rotate_keys()
    assert retired == kid_of(token) != new_key.kid
    assert auth.keys.ring.active.kid == new_key.kid
    assert (await auth.service.verify_external(token))["sub"] == "alice"
    assert kid_of(await auth.login()) == new_key.kid
    assert {jwk["kid"] for jwk in auth.keys.jwks()["keys"]} == {retired, new_key.kid}
    auth.clock.advance(RETIRED_KEY_PUBLISHED.total_seconds() + 1)
    await auth.keys.reload()
    assert [jwk["kid"] for jwk in auth.keys.jwks()["keys"]] == [new_key.kid]


@in_a_loop
async def test_a_rotation_deletes_the_keys_retired_more_than_a_day_before():
    auth = await Auth().started()
    first = auth.keys.ring.active.kid
    await auth.keys.rotate()
    auth.clock.advance(RETIRED_KEY_KEPT.total_seconds() + 1)
    second, _ = await auth.keys.rotate()
    assert first not in auth.keys_db.tables.keys
    assert len(auth.keys_db.tables.keys) == 2
    assert auth.keys.ring.active.kid == second.kid


@in_a_loop
async def test_a_key_another_instance_rotated_in_is_picked_up_when_a_token_names_it():
    here = await Auth().started()
    there = await here.another().started()
    await there.service.rotate_keys()
    token = await there.login()
    here.clock.advance(5)  # the unknown-kid reload interval
    assert (await here.service.verify_external(token))["sub"] == "alice"
    assert here.keys.ring.active.kid == there.keys.ring.active.kid


@in_a_loop
async def test_unknown_kids_reload_the_keys_at_most_once_per_interval():
    auth = await Auth().started()
    auth.clock.advance(5)
    before = auth.keys_db.statements.count("published")
    for _ in range(3):
        assert await auth.keys.key("no-such-kid") is None
    assert auth.keys_db.statements.count("published") == before + 1


# --- grants --------------------------------------------------------------------------------


@in_a_loop
async def test_a_password_grant_issues_an_external_token_for_the_user():
    auth = await Auth().started()
    claims = await auth.service.verify_external(await auth.login())
    assert (claims["sub"], claims["client_id"], claims["gty"]) == (
        "alice",
        PUBLIC_CLIENT_ID,
        GTY_PASSWORD,
    )


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("nobody", "secret")])
@in_a_loop
async def test_a_wrong_password_or_an_unknown_username_is_invalid_credentials(username, password):
    auth = await Auth().started()
    auth.credentials.set_password("alice", "secret")
    with pytest.raises(InvalidCredentials):
        await auth.service.password_grant(username, password, (), None)


@in_a_loop
async def test_a_user_with_a_password_whom_users_does_not_know_is_invalid_credentials():
    auth = await Auth().started()
    auth.credentials.set_password("gone", "secret")
    with pytest.raises(InvalidCredentials):
        await auth.service.password_grant("gone", "secret", (), None)


@in_a_loop
async def test_a_blocked_user_gets_no_token():
    auth = await Auth().started()
    auth.users.block("alice")
    with pytest.raises(UserBlocked):
        await auth.login()


@in_a_loop
async def test_a_password_grant_through_a_client_needs_that_clients_secret():
    auth = await Auth().started()
    auth.credentials.add_client("web", "web-secret", ["service"])
    auth.credentials.set_password("alice", "secret")
    issued = await auth.service.password_grant("alice", "secret", (), basic("web", "web-secret"))
    assert (await auth.service.verify_external(issued.token))["client_id"] == "web"
    with pytest.raises(InvalidClient):
        await auth.service.password_grant("alice", "secret", (), basic("web", "wrong"))


@in_a_loop
async def test_the_client_credentials_grant_issues_a_token_to_the_client_itself():
    auth = await Auth().started()
    auth.credentials.add_client("billing", "s3cret", ["service"])
    issued = await auth.service.client_credentials_grant(basic("billing", "s3cret"), ())
    claims = await auth.service.verify_external(issued.token)
    assert (claims["sub"], claims["gty"]) == ("billing", GTY_CLIENT_CREDENTIALS)


@pytest.mark.parametrize(("client_id", "secret"), [("billing", "wrong"), ("nobody", "s3cret")])
@in_a_loop
async def test_a_wrong_secret_or_an_unknown_client_is_invalid_client(client_id, secret):
    auth = await Auth().started()
    auth.credentials.add_client("billing", "s3cret", ["service"])
    with pytest.raises(InvalidClient):
        await auth.service.client_credentials_grant(basic(client_id, secret), ())


# --- token exchange ------------------------------------------------------------------------


@in_a_loop
async def test_an_exchange_carries_the_users_current_roles_and_never_outlives_the_token():
    auth = await Auth().started()
    external = await auth.login("root")
    external_claims = await auth.service.verify_external(external)
    exchanged = await auth.service.exchange(external)
    claims = await verify_internal_claims(exchanged.token, auth.keys, now=auth.clock())
    assert (claims["sub"], sorted(claims["roles"]), exchanged.is_user) == (
        "root",
        ["admin", "user"],
        True,
    )
    assert claims["exp"] <= external_claims["exp"]


@in_a_loop
async def test_an_exchange_for_a_client_carries_the_clients_roles_until_the_client_is_removed():
    auth = await Auth().started()
    auth.credentials.add_client("billing", "s3cret", ["service"])
    issued = await auth.service.client_credentials_grant(basic("billing", "s3cret"), ())
    exchanged = await auth.service.exchange(issued.token)
    assert (exchanged.claims["roles"], exchanged.is_user) == (["service"], False)
    del auth.credentials.clients["billing"]
    with pytest.raises(UnknownSubject):
        await auth.service.exchange(issued.token)


@in_a_loop
async def test_an_exchange_refuses_a_user_blocked_or_gone_since_the_token_was_issued():
    auth = await Auth().started()
    token = await auth.login()
    auth.users.block("alice")
    with pytest.raises(UserBlocked):
        await auth.service.exchange(token)
    del auth.users.users["alice"]
    with pytest.raises(UnknownSubject):
        await auth.service.exchange(token)


@in_a_loop
async def test_an_exchange_while_users_is_down_is_unavailable_and_a_bad_token_unauthenticated():
    auth = await Auth().started()
    token = await auth.login()
    auth.users.down = True
    with pytest.raises(Unavailable):
        await auth.service.exchange(token)
    with pytest.raises(Unauthenticated):
        await auth.service.exchange(token[:-4] + "AAAA")


@in_a_loop
async def test_a_user_blocked_event_drops_the_users_cached_exchanges():
    auth = await Auth().started()
    token = await auth.login()
    await auth.service.authorize(token)
    auth.users.block("alice")
    blocked = cloud_event(
        source="users", type=EventType.USER_BLOCKED, subject="user/alice", data={"userId": "alice"}
    )
    await auth.service.on_user_event(None, validate(blocked))
    with pytest.raises(UserBlocked):
        await auth.service.authorize(token)


# --- passwords set by an admin -------------------------------------------------------------


@in_a_loop
async def test_passwords_set_by_an_admin_are_the_ones_that_log_in():
    auth = await Auth().started()
    await auth.service.set_passwords([Credential("alice", "new-pass"), Credential("root", "pw")])
    assert set(auth.credentials.password_hashes) == {"alice", "root"}
    issued = await auth.service.password_grant("alice", "new-pass", (), None)
    assert (await auth.service.verify_external(issued.token))["sub"] == "alice"


@in_a_loop
async def test_passwords_for_unknown_users_are_refused_naming_them_and_none_is_set():
    auth = await Auth().started()
    with pytest.raises(UnknownUsers) as refused:
        await auth.service.set_passwords(
            [Credential("alice", "pw"), Credential("ghost", "pw"), Credential("nobody", "pw")]
        )
    assert refused.value.user_ids == ["ghost", "nobody"]
    assert auth.credentials.password_hashes == {}
