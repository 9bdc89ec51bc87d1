"""Demo credentials, generated at first start into the state dir and never committed.

The users service seeds the same user ids (services/users/migrations); auth hashes these
passwords at start. `mesh token USER` uses them to get a token through the edge, and the
passwords of the users `mesh users create` made (mesh/runtime/users.py) as well.
"""

from __future__ import annotations

import json
import secrets
import ssl
from pathlib import Path

import httpx

from mesh.components.edge import issuer
from mesh.placement import NativePlacement, Placement
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.tls import edge_certs
from mesh.topology import Topology

DEMO_USERS = ("alice", "bob", "admin")
CLI_CLIENT = "shopmesh-cli"


def seed_file(state: StateDir) -> Path:
    return state.secrets / "auth-seed.json"


def ensure_seed(state: StateDir) -> Path:
    path = seed_file(state)
    if not path.exists():
        seed = {
            "users": {user: secrets.token_urlsafe(12) for user in DEMO_USERS},
            "clients": {CLI_CLIENT: {"secret": secrets.token_urlsafe(24), "roles": ["service"]}},
        }
        write_private(path, json.dumps(seed, indent=2))
    return path


def created_users_file(state: StateDir) -> Path:
    """{user_id: password} of the users `mesh users create` made (owner-only)."""
    return state.secrets / "users.json"


def created_passwords(state: StateDir) -> dict[str, str]:
    path = created_users_file(state)
    return json.loads(path.read_text()) if path.exists() else {}


def password(state: StateDir, user: str) -> str:
    users: dict[str, str] = json.loads(seed_file(state).read_text())["users"]
    if user in users:
        return users[user]
    created = created_passwords(state)
    if user not in created:
        raise KeyError(
            f"no demo user {user!r} (demo users: {', '.join(users)}) and no user of that id in "
            f"{created_users_file(state)}"
        )
    return created[user]


def token(
    topology: Topology, state: StateDir, user: str, placement: Placement | None = None
) -> str:
    """An external access token for a demo or created user, from auth's token endpoint via the
    edge (of `placement`, by default the native one)."""
    response = httpx.post(
        f"{issuer(topology, placement or NativePlacement.of(topology))}/token",
        data={"grant_type": "password", "username": user, "password": password(state, user)},
        verify=ssl.create_default_context(cafile=str(edge_certs(state).ca_cert)),
        timeout=10.0,
    )
    response.raise_for_status()
    access_token: str = response.json()["access_token"]
    return access_token
