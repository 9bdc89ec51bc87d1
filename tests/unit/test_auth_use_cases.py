"""The auth use cases on in-memory fakes: signing keys made, rotated and picked up across
instances (KeyStore over its unit of work), the password and client_credentials grants, token
exchange, passwords set by an admin, and UserBlocked dropping cached exchanges."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from jose import jwt

from contracts import EventType
from contracts.cloudevents import cloud_event
from services.auth import keys as signing_keys
from services.auth.cache import ExchangeCache
from services.auth.credentials import Credential
from services.auth.keys import RETIRED_KEY_KEPT, KeyStore
from services.auth.login_limits import (
    AttemptKey,
    LoginLimiter,
    LoginLimitSettings,
    Scope,
    TooManyFailedLogins,
)
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
from tests.unit.fakes.auth import (
    FakeUsersDirectory,
    InMemoryCredentials,
    InMemoryKeysDatabase,
    InMemoryLoginAttempts,
)

ISSUER = "https://auth.test"
LIMITS = LoginLimitSettings(window_s=60, per_user=3, per_address=5)


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
        attempts: InMemoryLoginAttempts | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.keys_db = keys_db or InMemoryKeysDatabase()
        self.credentials = credentials or InMemoryCredentials()
        self.attempts = attempts or InMemoryLoginAttempts()
        self.keys = KeyStore(self.keys_db, clock=self.clock)
        self.users = FakeUsersDirectory(alice=["user"], root=["user", "admin"], bob=["user"])
        self.logins = LoginLimiter(self.attempts, LIMITS, self.keys.now)
        self.service = AuthService(
            self.credentials,
            self.keys,
            self.users,
            issuer=ISSUER,
            cache=ExchangeCache(clock=self.clock),
            logins=self.logins,
            clock=self.clock,
        )

    def another(self) -> Auth:
        return Auth(self.keys_db, self.credentials, self.clock, self.attempts)

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


def jwks_kids(auth: Auth) -> list[str]:
    return [jwk["kid"] for jwk in auth.keys.jwks()["keys"]]


@in_a_loop
async def test_the_first_start_creates_a_signing_key_and_a_next_key_under_the_lock():
    auth = await Auth().started()
    signing, following = sorted(
        auth.keys_db.tables.keys.values(), key=lambda k: k.active_from is None
    )
    assert signing.active_from == auth.keys.now()
    assert following.active_from is None
    assert auth.keys_db.statements == ["lock", "all", "add", "add", "all"]
    assert jwks_kids(auth) == [signing.kid, following.kid]
    assert kid_of(await auth.login()) == signing.kid


@in_a_loop
async def test_instances_starting_together_make_one_signing_key_and_one_next_key():
    first = Auth()
    others = [first.another() for _ in range(2)]
    await asyncio.gather(*(auth.keys.ensure_active_key() for auth in [first, *others]))
    assert len(first.keys_db.tables.keys) == 2
    assert len({auth.keys.signing_key().kid for auth in [first, *others]}) == 1


@in_a_loop
async def test_a_restart_keeps_the_keys():
    auth = await Auth().started()
    restarted = await auth.another().started()
    assert restarted.keys.signing_key().kid == auth.keys.signing_key().kid
    assert len(auth.keys_db.tables.keys) == 2


@in_a_loop
async def test_a_rotation_signs_with_the_key_published_long_before_and_publishes_a_new_next_key():
    auth = await Auth().started()
    old_token = await auth.login()
    (published_next,) = [k for k in auth.keys_db.tables.keys.values() if k.active_from is None]
    auth.clock.advance(auth.keys.publish_lead.total_seconds())
    rotation = await auth.service.rotate_keys()
    assert (rotation.kid, rotation.retired_kid) == (published_next.kid, kid_of(old_token))
    assert rotation.active_from == auth.keys.now(), "published long enough: it signs at once"
    assert kid_of(await auth.login()) == published_next.kid
    assert jwks_kids(auth) == [rotation.kid, rotation.next_kid, rotation.retired_kid]
    assert (await auth.service.verify_external(old_token))["sub"] == "alice"
    auth.clock.advance(RETIRED_KEY_PUBLISHED.total_seconds() + 1)
    await auth.keys.reload()
    assert jwks_kids(auth) == [rotation.kid, rotation.next_kid]


@in_a_loop
async def test_a_next_key_published_too_recently_signs_once_it_has_been_published_long_enough():
    auth = await Auth().started()
    started = auth.keys.now()
    auth.clock.advance(1)
    first = await auth.service.rotate_keys()  # right after the start: the next key is new
    assert first.active_from == started + auth.keys.publish_lead
    auth.clock.advance(1)
    second = await auth.service.rotate_keys()
    assert second.kid == first.next_kid and second.retired_kid == first.kid
    assert second.active_from == first.active_from + timedelta(seconds=1)
    assert jwks_kids(auth)[1:] == [first.kid, second.kid, second.next_kid]
    signing = auth.keys.signing_key().kid
    assert signing not in (first.kid, second.kid)
    auth.clock.advance(auth.keys.publish_lead.total_seconds() - 3)
    assert kid_of(await auth.login()) == signing
    auth.clock.advance(1)
    assert kid_of(await auth.login()) == first.kid
    auth.clock.advance(1)
    assert kid_of(await auth.login()) == second.kid


@in_a_loop
async def test_a_rotation_deletes_the_keys_retired_more_than_a_day_before():
    auth = await Auth().started()
    original = auth.keys.signing_key().kid
    auth.clock.advance(auth.keys.publish_lead.total_seconds())
    await auth.keys.rotate()
    auth.clock.advance(RETIRED_KEY_KEPT.total_seconds() + 1)
    second = await auth.keys.rotate()
    assert original not in auth.keys_db.tables.keys
    assert len(auth.keys_db.tables.keys) == 3  # the one retired now, the signing and next keys
    assert auth.keys.signing_key().kid == second.kid


@in_a_loop
async def test_another_instance_verifies_and_signs_with_the_rotated_key_without_reloading():
    here = await Auth().started()
    there = await here.another().started()
    here.clock.advance(here.keys.publish_lead.total_seconds())
    rotation = await there.service.rotate_keys()
    token = await there.login()
    assert kid_of(token) == rotation.kid
    statements = len(here.keys_db.statements)
    # `here` has not reloaded since it started: the key was published before it signed.
    assert (await here.service.verify_external(token))["sub"] == "alice"
    assert len(here.keys_db.statements) == statements, "no reload on an unknown kid"
    await here.keys.reload()  # the periodic reload
    assert here.keys.signing_key().kid == rotation.kid


@in_a_loop
async def test_keys_made_before_next_keys_existed_get_one_on_the_first_start():
    auth = Auth()
    legacy = replace(premade_keys()[3], created_at=auth.keys.now(), active_from=auth.keys.now())
    auth.keys_db.tables.keys[legacy.kid] = legacy
    await auth.keys.ensure_active_key()
    assert auth.keys.signing_key().kid == legacy.kid
    assert len(jwks_kids(auth)) == 2


@in_a_loop
async def test_unknown_kids_reload_the_keys_at_most_once_per_interval():
    auth = await Auth().started()
    auth.clock.advance(5)
    before = auth.keys_db.statements.count("all")
    for _ in range(3):
        assert await auth.keys.key("no-such-kid") is None
    assert auth.keys_db.statements.count("all") == before + 1


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


# --- the brute-force limit ----------------------------------------------------------------


async def grant(auth: Auth, username: str, password: str, address: str = "203.0.113.7") -> str:
    """The outcome of one password grant: "ok", "invalid" or "locked <retry after>"."""
    try:
        await auth.service.password_grant(
            username, password, ("shopmesh",), None, client_address=address
        )
    except InvalidCredentials:
        return "invalid"
    except TooManyFailedLogins as exc:
        return f"locked {exc.retry_after_s}"
    return "ok"


@in_a_loop
async def test_failures_over_the_limit_lock_the_user_right_password_included_until_window_ends():
    auth = await Auth().started()
    auth.credentials.set_password("alice", "secret")
    outcomes = [await grant(auth, "alice", f"guess-{n}") for n in range(5)]
    assert outcomes == ["invalid"] * 3 + ["locked 60"] * 2
    auth.clock.advance(15)
    assert await grant(auth, "alice", "secret") == "locked 45"
    assert await grant(auth, "alice", "secret", address="198.51.100.1") == "locked 45"
    auth.clock.advance(45)
    assert await grant(auth, "alice", "secret") == "ok"


@in_a_loop
async def test_unknown_usernames_count_like_wrong_passwords():
    auth = await Auth().started()
    outcomes = [await grant(auth, "nobody", "guess") for _ in range(4)]
    assert outcomes == ["invalid"] * 3 + ["locked 60"]


@in_a_loop
async def test_failures_from_one_address_over_its_limit_lock_that_address_for_every_username():
    auth = await Auth().started()
    auth.credentials.set_password("bob", "bobs")
    sprayed = [await grant(auth, f"user-{n}", "Winter2026!") for n in range(6)]
    assert sprayed == ["invalid"] * 5 + ["locked 60"]
    assert await grant(auth, "bob", "bobs") == "locked 60"
    assert await grant(auth, "bob", "bobs", address="198.51.100.1") == "ok"


@in_a_loop
async def test_successes_and_blocked_users_count_nothing():
    auth = await Auth().started()
    auth.credentials.set_password("alice", "secret")
    auth.credentials.set_password("root", "secret")
    assert [await grant(auth, "alice", "secret") for _ in range(10)] == ["ok"] * 10
    auth.users.block("root")
    for _ in range(10):
        with pytest.raises(UserBlocked):
            await auth.service.password_grant("root", "secret", (), None, client_address="a")
    assert auth.attempts.attempts(AttemptKey(Scope.USER, "alice")) == 0
    assert auth.attempts.attempts(AttemptKey(Scope.USER, "root")) == 0
    assert auth.attempts.attempts(AttemptKey(Scope.ADDRESS, "203.0.113.7")) == 0


@in_a_loop
async def test_a_burst_of_concurrent_guesses_on_two_instances_gets_no_more_than_the_limit_checked():
    here = await Auth().started()
    there = await here.another().started()
    here.credentials.set_password("alice", "secret")
    outcomes = await asyncio.gather(
        *(grant(auth, "alice", f"guess-{n}") for n, auth in enumerate([here, there] * 10))
    )
    assert sorted(outcomes) == ["invalid"] * 3 + ["locked 60"] * 17
    assert await grant(there, "alice", "secret") == "locked 60"


@in_a_loop
async def test_windows_that_are_over_are_pruned():
    auth = await Auth().started()
    await grant(auth, "alice", "guess")
    auth.clock.advance(61)
    assert await auth.logins.prune() == 2
    assert auth.attempts.windows == {}


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
