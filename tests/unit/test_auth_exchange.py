"""The exchange cache and the ext_authz use case over fake users and in-memory keys."""

import asyncio
from datetime import UTC, datetime

import grpc
import pytest

from services.auth.cache import CachedExchange, ExchangeCache
from services.auth.clients import UnknownUser, UserInfo, UsersUnavailable
from services.auth.known_users import KnownUsers
from services.auth.service import REUSE_MARGIN_S, AuthService, UnknownSubject, UserBlocked
from services.auth.tokens import (
    GTY_PASSWORD,
    INTERNAL_TTL_S,
    external_claims,
    generate_signing_key,
    sign,
)
from services.common.auth.jwt import verify_internal
from services.common.auth.principal import Unauthenticated
from services.common.errors import Unavailable
from tests.unit.fakes.users import user_blocked

ISSUER = "https://127.0.0.1:8443/auth"
KEY = generate_signing_key(datetime.now(UTC))


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class MemoryKeys:
    async def key(self, kid):
        return KEY.verification_key if kid == KEY.kid else None

    def sign(self, claims):
        return sign(claims, KEY)


class FakeUsers:
    def __init__(self):
        self.calls = []
        self.blocked = set()
        self.roles = {"alice": {"user"}, "admin": {"user", "admin"}}
        self.down = False

    async def get_user(self, user_id):
        self.calls.append(user_id)
        if self.down:
            raise UsersUnavailable(_unavailable())
        if user_id not in self.roles:
            raise UnknownUser(user_id)
        return UserInfo(user_id, frozenset(self.roles[user_id]), user_id in self.blocked)


def _unavailable():
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
    )


def external_token(clock, sub="alice", ttl=900):
    claims = external_claims(
        issuer=ISSUER,
        sub=sub,
        client_id="cli",
        scope=["shopmesh"],
        gty=GTY_PASSWORD,
        now=int(clock()),
    )
    claims["exp"] = int(clock()) + ttl
    return sign(claims, KEY)


def make_service(clock, users):
    return AuthService(
        None,
        MemoryKeys(),
        users,
        issuer=ISSUER,
        cache=ExchangeCache(clock=clock),
        clock=clock,
    )


# --- the cache on its own ------------------------------------------------------------------


def entry(sub="alice", expires_at=1300.0, checked_at=1000.0, is_user=True):
    return CachedExchange("internal", sub, is_user, expires_at, checked_at)


def test_a_cached_exchange_is_served_until_shortly_before_it_expires():
    clock = Clock(1000.0)
    cache = ExchangeCache(clock=clock, margin_s=15)
    cache.put("token", entry(expires_at=1300.0))
    assert cache.get("token").internal_token == "internal"
    clock.now = 1284.0
    assert cache.get("token") is not None
    clock.now = 1285.0
    assert cache.get("token") is None
    assert len(cache) == 0


def test_an_exchange_about_to_expire_is_not_cached():
    cache = ExchangeCache(clock=Clock(1000.0), margin_s=15)
    cache.put("token", entry(expires_at=1010.0))
    assert cache.get("token") is None


def test_invalidate_user_drops_every_entry_of_that_user_only():
    cache = ExchangeCache(clock=Clock(1000.0))
    cache.put("a1", entry("alice"))
    cache.put("a2", entry("alice"))
    cache.put("b1", entry("bob"))
    assert cache.invalidate_user("alice") == 2
    assert cache.get("a1") is None and cache.get("a2") is None
    assert cache.get("b1") is not None
    assert cache.invalidate_user("alice") == 0


def test_the_cache_is_bounded_and_evicts_the_least_recently_used():
    cache = ExchangeCache(clock=Clock(1000.0), max_entries=2)
    cache.put("t1", entry("u1"))
    cache.put("t2", entry("u2"))
    cache.get("t1")
    cache.put("t3", entry("u3"))
    assert len(cache) == 2
    assert cache.get("t2") is None
    assert cache.get("t1") is not None and cache.get("t3") is not None
    assert cache.invalidate_user("u2") == 0


def test_users_are_due_for_a_recheck_every_30_seconds_machines_never():
    clock = Clock(1000.0)
    cache = ExchangeCache(clock=clock, recheck_s=30)
    user, machine = entry(checked_at=1000.0), entry("cli", checked_at=1000.0, is_user=False)
    clock.now = 1029.0
    assert not cache.needs_recheck(user)
    clock.now = 1030.0
    assert cache.needs_recheck(user)
    assert not cache.needs_recheck(machine)
    cache.checked(user)
    assert not cache.needs_recheck(user)


def test_block_events_known_handled_since_a_users_last_check_put_off_its_recheck():
    clock = Clock(1000.0)
    cache = ExchangeCache(clock=clock, recheck_s=30)
    user = entry(checked_at=1000.0)
    clock.now = 1040.0
    assert not cache.needs_recheck(user, blocks_current_at=1015.0)
    assert cache.needs_recheck(user, blocks_current_at=1010.0)
    assert cache.needs_recheck(user, blocks_current_at=990.0)  # older than its own check
    assert cache.needs_recheck(user, blocks_current_at=None)


def test_the_cache_never_keeps_the_token_itself():
    cache = ExchangeCache(clock=Clock(1000.0))
    cache.put("secret-token-value", entry())
    assert "secret-token-value" not in repr(cache._entries)


# --- ext_authz through the service -----------------------------------------------------------


def test_the_second_check_of_a_token_is_a_cache_hit():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        first = await service.authorize(token)
        second = await service.authorize(token)
        return first, second, users.calls

    first, second, calls = asyncio.run(go())
    assert first.internal_token == second.internal_token
    assert calls == ["alice"]


def test_a_burst_of_checks_of_a_new_token_shares_one_exchange():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        entries = await asyncio.gather(*(service.authorize(token) for _ in range(8)))
        return entries, users.calls

    entries, calls = asyncio.run(go())
    assert {entry.internal_token for entry in entries} == {entries[0].internal_token}
    assert calls == ["alice"]


def test_a_failed_shared_exchange_fails_every_check_of_the_burst_and_is_asked_again():
    async def go():
        clock, users = Clock(), FakeUsers()
        users.down = True
        service = make_service(clock, users)
        token = external_token(clock)
        burst = await asyncio.gather(
            *(service.authorize(token) for _ in range(4)), return_exceptions=True
        )
        users.down = False
        again = await service.authorize(token)
        return burst, again, users.calls

    burst, again, calls = asyncio.run(go())
    assert all(isinstance(outcome, Unavailable) for outcome in burst)
    assert again.sub == "alice"
    assert calls == ["alice", "alice"]


def test_the_internal_token_carries_the_users_roles_and_verifies():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        internal = await service.authorize(external_token(clock, "admin"))
        return await verify_internal(internal.internal_token, MemoryKeys(), now=clock())

    principal = asyncio.run(go())
    assert principal.sub == "admin"
    assert principal.roles == {"user", "admin"}


def test_the_internal_token_never_outlives_the_external_one():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        exchanged = await service.exchange(external_token(clock, ttl=120))
        return exchanged.claims["exp"] - exchanged.claims["iat"]

    assert asyncio.run(go()) == 120
    assert INTERNAL_TTL_S > 120


def test_an_expired_cache_entry_means_a_fresh_exchange():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        await service.authorize(token)
        clock.now += INTERNAL_TTL_S
        await service.authorize(token)
        return users.calls

    assert asyncio.run(go()) == ["alice", "alice"]


def test_a_user_blocked_after_caching_is_refused_at_the_next_recheck():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        await service.authorize(token)
        users.blocked.add("alice")
        clock.now += 10
        still_cached = await service.authorize(token)
        clock.now += 25
        with pytest.raises(UserBlocked):
            await service.authorize(token)
        return still_cached, len(service.cache)

    still_cached, remaining = asyncio.run(go())
    assert still_cached
    assert remaining == 0


def test_while_the_block_events_are_current_a_cached_user_is_not_asked_of_users_again():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        service.follow_blocks(lambda: clock.now - 5)
        token = external_token(clock)
        await service.authorize(token)
        calls = len(users.calls)
        clock.now += 100
        await service.authorize(token)
        return len(users.calls) - calls

    assert asyncio.run(go()) == 0


def test_once_the_block_events_are_not_current_a_cached_user_is_rechecked_and_a_block_seen():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        stalled_at = clock.now
        service.follow_blocks(lambda: stalled_at)
        token = external_token(clock)
        await service.authorize(token)
        users.blocked.add("alice")
        clock.now += 31
        with pytest.raises(UserBlocked):
            await service.authorize(token)

    asyncio.run(go())


def test_invalidate_user_forces_a_new_exchange_that_sees_the_block():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        await service.authorize(token)
        users.blocked.add("alice")
        service.invalidate_user("alice")
        with pytest.raises(UserBlocked):
            await service.authorize(token)

    asyncio.run(go())


def test_a_user_blocked_event_or_a_block_seen_by_a_recheck_is_listed_for_the_edges():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        await service.authorize(token)
        users.blocked.add("alice")
        clock.now += 31
        with pytest.raises(UserBlocked):
            await service.authorize(token)
        await service.on_user_event(None, user_blocked("bob"))
        return service.recent_blocks.users()

    assert asyncio.run(go()) == ["alice", "bob"]


def test_a_recheck_while_users_is_down_keeps_serving_the_cached_exchange():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        token = external_token(clock)
        first = await service.authorize(token)
        users.down = True
        clock.now += 31
        again = await service.authorize(token)
        calls_before = len(users.calls)
        clock.now += 5
        await service.authorize(token)
        return first == again, len(users.calls) - calls_before

    same, extra_calls = asyncio.run(go())
    assert same
    assert extra_calls == 0  # the failed re-check waits another 30 s


def test_a_first_exchange_while_users_is_down_fails_as_unavailable():
    async def go():
        clock, users = Clock(), FakeUsers()
        users.down = True
        await make_service(clock, users).authorize(external_token(clock))

    with pytest.raises(Unavailable):
        asyncio.run(go())


def test_an_unknown_user_or_a_bad_token_is_not_exchanged():
    async def go(token_for):
        clock, users = Clock(), FakeUsers()
        await make_service(clock, users).authorize(token_for(clock))

    with pytest.raises(UnknownSubject):
        asyncio.run(go(lambda clock: external_token(clock, "mallory")))
    with pytest.raises(Unauthenticated):
        asyncio.run(go(lambda clock: external_token(clock, ttl=-3600)))


def test_the_edge_may_reuse_an_exchange_until_shortly_before_the_internal_token_expires():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        exchanged = await service.authorize(external_token(clock, ttl=120))
        fresh = service.reusable_for_s(exchanged)
        clock.now += 118
        return fresh, service.reusable_for_s(exchanged)

    assert asyncio.run(go()) == (120 - REUSE_MARGIN_S, 0)


# --- users' answers reused for a user's next exchanges -------------------------------------


def test_users_answer_stands_while_the_block_events_vouch_for_it_and_at_most_its_max_age():
    clock = Clock(1000.0)
    known = KnownUsers(clock=clock, recheck_s=30, max_age_s=600)
    known.put(UserInfo("alice", frozenset({"user"}), False))
    clock.now = 1029.0
    assert known.get("alice", blocks_current_at=None) is not None
    clock.now = 1030.0
    assert known.get("alice", blocks_current_at=None) is None
    assert known.get("alice", blocks_current_at=1001.0) is not None
    clock.now = 1600.0
    assert known.get("alice", blocks_current_at=1599.0) is None
    assert len(known) == 0


def test_a_blocked_or_forgotten_user_is_not_known_and_the_map_is_bounded():
    known = KnownUsers(clock=Clock(1000.0), max_entries=2)
    known.put(UserInfo("mallory", frozenset({"user"}), True))
    assert known.get("mallory", blocks_current_at=1000.0) is None
    for user_id in ("u1", "u2"):
        known.put(UserInfo(user_id, frozenset({"user"}), False))
    known.get("u1", blocks_current_at=1000.0)
    known.put(UserInfo("u3", frozenset({"user"}), False))
    assert known.get("u2", blocks_current_at=1000.0) is None
    known.forget("u3")
    assert [known.get(u, blocks_current_at=1000.0) is not None for u in ("u1", "u3")] == [
        True,
        False,
    ]


def test_a_users_new_token_needs_no_call_to_users_while_the_block_events_are_current():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        service.follow_blocks(lambda: clock.now - 5)
        await service.authorize(external_token(clock))
        clock.now += 200
        internal = await service.authorize(external_token(clock))
        return users.calls, await verify_internal(
            internal.internal_token, MemoryKeys(), now=clock()
        )

    calls, principal = asyncio.run(go())
    assert calls == ["alice"]
    assert principal.sub == "alice" and principal.roles == {"user"}


def test_a_block_event_makes_the_next_exchange_ask_users_and_refuse():
    async def go():
        clock, users = Clock(), FakeUsers()
        service = make_service(clock, users)
        service.follow_blocks(lambda: clock.now - 5)
        await service.authorize(external_token(clock))
        users.blocked.add("alice")
        await service.on_user_event(None, user_blocked("alice"))
        clock.now += 1
        with pytest.raises(UserBlocked):
            await service.authorize(external_token(clock))
        return users.calls

    assert asyncio.run(go()) == ["alice", "alice"]


def test_a_block_learnt_while_users_answered_stands_over_the_answer():
    class BlockedWhileAnswering(FakeUsers):
        service: AuthService

        async def get_user(self, user_id):
            answer = await super().get_user(user_id)
            await self.service.on_user_event(None, user_blocked(user_id))
            return answer

    async def go():
        clock, users = Clock(), BlockedWhileAnswering()
        service = users.service = make_service(clock, users)
        service.follow_blocks(lambda: clock.now - 5)
        with pytest.raises(UserBlocked):
            await service.authorize(external_token(clock))
        return len(service.cache), len(service.known_users)

    assert asyncio.run(go()) == (0, 0)
