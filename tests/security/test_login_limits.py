"""Brute force against POST /auth/token through the real edge: failed logins are limited per
username and per client address, the right password included while locked, across both auth
instances, and the client address is the edge's (spoofed forwarding headers do not reset it).

The native mesh counts in `auth.login_limits` of mesh/topology.yaml (a 60 s window)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from mesh.runtime import demo
from mesh.runtime.supervisor import Mesh
from tests.security.clients import from_address, password_grant
from tests.support import FreshUser, wait_for

PROBLEM = "application/problem+json"


def assert_locked(resp: httpx.Response, window_s: int) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["type"] == "/problems/too-many-failed-logins"
    assert 1 <= int(resp.headers["retry-after"]) <= window_s


def test_twenty_wrong_passwords_lock_the_user_until_the_window_passes_the_right_one_included(
    mesh: Mesh, fresh_user: Callable[[], FreshUser]
) -> None:
    limits = mesh.topology.login_limits
    user = fresh_user().id
    password = demo.password(mesh.state, user)
    with (
        from_address(mesh.topology, "127.0.0.21") as attacker,
        from_address(mesh.topology, "127.0.0.22") as elsewhere,
    ):
        guesses = [password_grant(attacker, user, f"guess-{n}") for n in range(20)]
        statuses = [resp.status_code for resp in guesses]
        assert statuses == [400] * limits.per_user + [429] * (20 - limits.per_user), statuses
        assert {resp.json()["error"] for resp in guesses[: limits.per_user]} == {"invalid_grant"}
        for resp in guesses[limits.per_user :]:
            assert_locked(resp, limits.window_s)

        # The right password now: still locked, from this address and from any other.
        assert_locked(password_grant(attacker, user, password), limits.window_s)
        assert_locked(password_grant(elsewhere, user, password), limits.window_s)

        def unlocked() -> httpx.Response | None:
            resp = password_grant(elsewhere, user, password)
            if resp.status_code == 429:
                return None
            return resp

        # Locked until the window passes, then the right password logs in again.
        after = wait_for(
            unlocked, timeout=limits.window_s + 60, what="the lock's window to pass", interval=1.0
        )
        assert after.status_code == 200, after.text
        assert after.json()["access_token"]


def test_failures_from_one_address_lock_it_for_every_user_and_forged_forwarding_headers_do_not_help(
    mesh: Mesh, fresh_user: Callable[[], FreshUser]
) -> None:
    limits = mesh.topology.login_limits
    victim = fresh_user().id
    password = demo.password(mesh.state, victim)
    with (
        from_address(mesh.topology, "127.0.0.31") as sprayer,
        from_address(mesh.topology, "127.0.0.32") as elsewhere,
    ):
        for n in range(limits.per_address):
            # A different made-up user each time (no per-user lock) and a different forged
            # client address: were either believed, the address would never fill up.
            forged = f"10.{n // 250}.{n % 250}.1"
            resp = password_grant(
                sprayer,
                f"nobody-{uuid.uuid4()}",
                "Winter2026!",
                **{"x-forwarded-for": forged, "x-shopmesh-client-address": forged,
                   "x-real-ip": forged},
            )  # fmt: skip
            assert resp.status_code == 400, (n, resp.status_code, resp.text)

        locked = password_grant(
            sprayer, victim, password, **{"x-forwarded-for": "10.99.0.1",
                                         "x-shopmesh-client-address": "10.99.0.1"}
        )  # fmt: skip
        assert_locked(locked, limits.window_s)
        # The address is locked, not the user: from another address the user logs in.
        assert password_grant(elsewhere, victim, password).status_code == 200


def test_the_many_right_logins_of_one_user_are_never_limited(
    mesh: Mesh, fresh_user: Callable[[], FreshUser]
) -> None:
    attempts = 3 * mesh.topology.login_limits.per_user
    user = fresh_user().id
    password = demo.password(mesh.state, user)
    with from_address(mesh.topology, "127.0.0.41") as client:
        statuses = [password_grant(client, user, password).status_code for _ in range(attempts)]
    assert statuses == [200] * attempts
