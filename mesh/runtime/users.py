"""Users with passwords in bulk, through the edge's admin path (`mesh users create`).

As the admin, per 1000 users: one `POST /users:batchCreate` (users' BatchCreateUsers), then one
`POST /auth/credentials` with a generated password for each. The passwords are merged into the
state dir's `secrets/users.json` ({user_id: password}, owner-only) once auth has them, where
`mesh token USER` and the tests' fixtures find them. Nothing turns a limit off: each created user
has the edge's per-user budget of its own, which is why the load benchmark and the tests need
many of them.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
from typing import Any

import httpx

from mesh.placement import NativePlacement, Placement
from mesh.runtime import demo
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology

# What one call of either endpoint takes (users' BatchCreateUsers, auth's /auth/credentials).
MAX_PER_CALL = 1000
CREDENTIALS_PATH = "/auth/credentials"
PASSWORD_BYTES = 18
# Becomes the users' names and their emails' local part: `<prefix>-<run>-<n>@shopmesh.local`.
PREFIX_SHAPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
EMAIL_DOMAIN = "shopmesh.local"
# Above the edge's own timeout of the route, so the edge's answer (a 504 problem) is what we see.
TIMEOUT_MARGIN_S = 5.0


class UsersError(Exception):
    """Users could not be created: a bad request, or the edge or a service refused."""


def create_users(
    topology: Topology,
    state: StateDir,
    count: int,
    *,
    prefix: str = "user",
    placement: Placement | None = None,
) -> list[str]:
    """`count` new users (role user) with generated passwords, as the admin through the edge
    (of `placement`, by default the native one); their ids in creation order. Passwords are
    saved after each 1000 are set."""
    check_request(count, prefix)
    run = secrets.token_hex(4)  # new emails on every run: emails are unique in users
    created: list[str] = []
    with admin_client(topology, state, placement or NativePlacement.of(topology)) as edge:
        for start in range(0, count, MAX_PER_CALL):
            numbers = range(start, min(start + MAX_PER_CALL, count))
            user_ids = batch_create(edge, [new_user(prefix, run, n) for n in numbers])
            passwords = {user_id: secrets.token_urlsafe(PASSWORD_BYTES) for user_id in user_ids}
            set_passwords(edge, passwords, timeout_s=credentials_timeout_s(topology))
            save_passwords(state, passwords)
            created += user_ids
    return created


def check_request(count: int, prefix: str) -> None:
    if count < 1:
        raise UsersError(f"COUNT must be at least 1, got {count}")
    if not PREFIX_SHAPE.fullmatch(prefix):
        raise UsersError(
            f"--prefix must be 1-40 of a-z, 0-9, '.', '_', '-' (starting with a letter or a "
            f"digit), got {prefix!r}"
        )


def new_user(prefix: str, run: str, number: int) -> dict[str, str]:
    return {"name": f"{prefix} {number}", "email": f"{prefix}-{run}-{number}@{EMAIL_DOMAIN}"}


def admin_client(topology: Topology, state: StateDir, placement: Placement) -> httpx.Client:
    """The edge's TLS listener, as the admin (a password grant with the seeded password)."""
    try:
        token = demo.token(topology, state, "admin", placement)
    except (KeyError, FileNotFoundError) as exc:
        raise UsersError(f"no admin password ({exc}); is the mesh up (`mesh up`)?") from None
    except httpx.HTTPError as exc:
        raise UsersError(f"the admin's token: the token endpoint did not answer: {exc}") from None
    return httpx.Client(
        base_url=f"https://{placement.public()}:{topology.edge.https_port}",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(edge_certs(state).ca_cert)),
        timeout=10.0,
    )


def batch_create(edge: httpx.Client, users: list[dict[str, str]]) -> list[str]:
    """The ids of the new users, in the order of `users`."""
    response = _post(edge, "/users:batchCreate", {"requests": users})
    return [user["id"] for user in response.json()["users"]]


def set_passwords(edge: httpx.Client, passwords: dict[str, str], *, timeout_s: float) -> None:
    credentials = [{"userId": user_id, "password": pw} for user_id, pw in passwords.items()]
    _post(edge, CREDENTIALS_PATH, {"credentials": credentials}, timeout_s=timeout_s)


def credentials_timeout_s(topology: Topology) -> float:
    """The edge route's timeout: hashing 1000 passwords takes auth a minute or more."""
    (route,) = [r for r in topology.edge.routes if r.prefix == CREDENTIALS_PATH]
    return route.timeout_ms / 1000 + TIMEOUT_MARGIN_S


def save_passwords(state: StateDir, passwords: dict[str, str]) -> None:
    """Merge into secrets/users.json (owner-only, rewritten whole)."""
    merged = demo.created_passwords(state) | passwords
    write_private(demo.created_users_file(state), json.dumps(merged, indent=1))


def _post(
    edge: httpx.Client, path: str, body: dict[str, Any], *, timeout_s: float | None = None
) -> httpx.Response:
    timeout = edge.timeout if timeout_s is None else httpx.Timeout(timeout_s)
    try:
        response = edge.post(path, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise UsersError(f"POST {path}: the edge did not answer: {exc}") from None
    if response.status_code != 200:
        raise UsersError(f"POST {path}: {response.status_code} {_reason(response)}")
    return response


def _reason(response: httpx.Response) -> str:
    """A problem's detail, or the transcoder's status message, or the body as it came."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("message") or body.get("title") or body)
    return response.text[:500]
