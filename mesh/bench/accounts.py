"""The bench users: made once through the admin path (`mesh users create`), their external
tokens (refreshed before they expire) and one order of each user's own to read.

A user may only read their own orders (another's is a 404), so a GET through the edge spread
over many users reads each user's own order.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mesh.bench import db
from mesh.components.edge import issuer
from mesh.placement import NativePlacement
from mesh.runtime import demo, users
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology

PREFIX = "bench"
ITEMS = [{"productId": "book", "quantity": 1}]
# External tokens live 15 minutes; one older than this is fetched anew before a run (which is
# at most half a minute long).
TOKEN_REFRESH_S = 10 * 60
# Password grants at once: auth hashes each (scrypt), so more only queue on its two cores.
TOKEN_FETCHERS = 4
ORDER_PLACERS = 8
TOO_MANY_REQUESTS = 429
POST_ATTEMPTS = 30

T = TypeVar("T")


class AccountsError(RuntimeError):
    """The bench users, their tokens or their orders could not be had."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def bench_dir(state: StateDir) -> Path:
    folder = state.root / "bench"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def ensure_users(topology: Topology, state: StateDir, count: int) -> list[str]:
    """`count` bench users (their ids), creating those missing through `mesh users create`'s
    path. Ids are kept in the state dir: users whose password is gone are made anew."""
    path = bench_dir(state) / "users.json"
    passwords = demo.created_passwords(state)
    known = [u for u in json.loads(path.read_text())] if path.exists() else []
    known = [u for u in known if u in passwords]
    if len(known) < count:
        missing = count - len(known)
        say(f"creating {missing} bench users (once: auth hashes each password)")
        try:
            known += users.create_users(topology, state, missing, prefix=PREFIX)
        except users.UsersError as exc:
            raise AccountsError(f"creating bench users: {exc}") from None
        path.write_text(json.dumps(known))
    return known[:count]


def tls_context(state: StateDir) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(edge_certs(state).ca_cert))


def _client(state: StateDir, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source, verify=tls_context(state))
    return httpx.Client(transport=transport, timeout=30.0)


def _post_paced(
    client: httpx.Client,
    url: str,
    *,
    data: dict[str, str] | None = None,
    json: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A POST, waiting out the edge's 429 (the token endpoint is limited per client address) and
    a connection the balancer drops while the edges are still draining a load step's backlog."""
    for _ in range(POST_ATTEMPTS - 1):
        try:
            response = client.post(url, data=data, json=json, headers=headers)
        except httpx.TransportError:
            pass
        else:
            if response.status_code != TOO_MANY_REQUESTS:
                return response
        time.sleep(1.0)
    return client.post(url, data=data, json=json, headers=headers)


def _password_grant(client: httpx.Client, topology: Topology, user: str, password: str) -> str:
    response = _post_paced(
        client,
        f"{issuer(topology, NativePlacement.of(topology))}/token",
        data={"grant_type": "password", "username": user, "password": password},
    )
    if response.status_code != 200:
        raise AccountsError(f"token for {user}: {response.status_code} {response.text[:200]}")
    token: str = response.json()["access_token"]
    return token


def _spread(
    state: StateDir,
    sources: Sequence[str],
    jobs: Sequence[str],
    workers: int,
    work: Callable[[httpx.Client, str], T],
) -> list[T]:
    """`work(client, job)` for every job, `workers` at a time, each worker's client bound to
    one of the source addresses in turn."""
    clients = [_client(state, sources[n % len(sources)]) for n in range(workers)]
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda nj: work(clients[nj[0] % workers], nj[1]), enumerate(jobs)))
    finally:
        for client in clients:
            client.close()


def tokens(
    topology: Topology, state: StateDir, user_ids: Sequence[str], sources: Sequence[str]
) -> dict[str, str]:
    """A valid external token of each user, fetched anew where the kept one is getting old."""
    path = bench_dir(state) / "tokens.json"
    # user -> (token, when it was fetched); a JSON array each in the file
    kept: dict[str, tuple[str, float]] = {}
    if path.exists():
        kept = {user: (token, at) for user, (token, at) in json.loads(path.read_text()).items()}
    now = time.time()
    stale = [u for u in user_ids if u not in kept or now - kept[u][1] > TOKEN_REFRESH_S]
    if stale:
        say(f"fetching tokens of {len(stale)} bench users (password grants, paced)")
        passwords = demo.created_passwords(state)
        started = time.time()
        fetched = _spread(
            state,
            sources,
            stale,
            TOKEN_FETCHERS,
            lambda client, user: _password_grant(client, topology, user, passwords[user]),
        )
        kept |= {user: (token, started) for user, token in zip(stale, fetched, strict=True)}
        write_private(path, json.dumps(kept))
    return {u: kept[u][0] for u in user_ids}


def internal_token(topology: Topology, state: StateDir, external: str) -> str:
    """The internal JWT auth's token exchange (RFC 8693) gives for an external token: what the
    edge hands the services, and what a client of a service's own port must bring."""
    with httpx.Client(verify=tls_context(state), timeout=10.0) as client:
        response = _post_paced(
            client,
            f"{issuer(topology, NativePlacement.of(topology))}/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": external,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            },
        )
    if response.status_code != 200:
        raise AccountsError(f"token exchange: {response.status_code} {response.text[:200]}")
    token: str = response.json()["access_token"]
    return token


def own_orders(
    topology: Topology, state: StateDir, user_tokens: dict[str, str], sources: Sequence[str]
) -> dict[str, str]:
    """An order of each user's own (the oldest), placed through the edge where one is missing."""
    rows = db.query(
        topology,
        state,
        "orders",
        "SELECT DISTINCT ON (user_id) user_id, id::text AS id FROM orders "
        "WHERE user_id = ANY($1::text[]) ORDER BY user_id, created_at",
        list(user_tokens),
    )
    orders = {r["user_id"]: r["id"] for r in rows}
    missing = [u for u in user_tokens if u not in orders]
    if missing:
        say(f"placing one order for each of {len(missing)} bench users (once)")
        url = f"https://{topology.bind_host}:{topology.edge.https_port}/orders"

        def place(client: httpx.Client, user: str) -> str:
            response = _post_paced(
                client,
                url,
                json={"userId": user, "items": ITEMS},
                headers={"Authorization": f"Bearer {user_tokens[user]}"},
            )
            if response.status_code not in (201, 202):
                raise AccountsError(f"order of {user}: {response.status_code} {response.text}")
            order_id: str = response.json()["id"]
            return order_id

        placed = _spread(state, sources, missing, ORDER_PLACERS, place)
        orders |= dict(zip(missing, placed, strict=True))
    return orders
