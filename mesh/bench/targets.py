"""vegeta's JSON targets, one request a line: the tools cycle through them in order, so a list
of each user's request with that user's token is a round robin over the users."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Source addresses of the load: one tool process binds each (`-laddr`), so the edge's per-client
# address limit counts each separately. 127.0.0.1 is left to everything else on the machine.
FIRST_SOURCE = 2


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""


def line(request: Request) -> str:
    """One target in vegeta's JSON format (`-format=json`): headers as lists, body in base64."""
    target: dict[str, Any] = {
        "method": request.method,
        "url": request.url,
        "header": {name: [value] for name, value in request.headers.items()},
    }
    if request.body:
        target["body"] = base64.b64encode(request.body).decode()
    return json.dumps(target, separators=(",", ":"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def gets(url_and_token: Iterable[tuple[str, str]]) -> list[Request]:
    return [Request("GET", url, bearer(token)) for url, token in url_and_token]


def order_posts(
    url: str, tokens: Sequence[tuple[str, str]], count: int, items: list[dict[str, Any]]
) -> list[Request]:
    """`count` order placements, round robin over (user, token), each with an Idempotency-Key of
    its own: the tools cycle through the list, so it must be at least as long as the run."""
    posts = []
    for n in range(count):
        user, token = tokens[n % len(tokens)]
        body = json.dumps({"userId": user, "items": items}).encode()
        headers = {
            **bearer(token),
            "Content-Type": "application/json",
            "Idempotency-Key": f"bench-{uuid.uuid4()}",
        }
        posts.append(Request("POST", url, headers, body))
    return posts


def shares(requests: Sequence[Request], capacities: Sequence[int]) -> list[list[Request]]:
    """`requests` in consecutive parts, one for each process, each at most its `capacity` (what
    its rate sends in the run) and in proportion to it, so that every request is sent once: the
    tools cycle through their own list, and processes sharing one list would all send its start.
    A process left with nothing repeats the first request (a tool needs one target at least)."""
    total, room = len(requests), sum(capacities)
    if total > room:
        raise ValueError(f"{total} requests do not fit in {room} sends")
    parts, start = [], 0
    for capacity in capacities:
        size = min(capacity, math.ceil(total * capacity / room), total - start)
        parts.append(list(requests[start : start + size]) or list(requests[:1]))
        start += size
    return parts


def idempotency_keys(requests: Iterable[Request]) -> list[str]:
    return [r.headers["Idempotency-Key"] for r in requests if "Idempotency-Key" in r.headers]


def sources(count: int) -> list[str]:
    return [f"127.0.0.{FIRST_SOURCE + n}" for n in range(count)]


def split(total: int, parts: int) -> list[int]:
    """`total` (a rate, or workers) over `parts` processes, as even as whole numbers go."""
    share, extra = divmod(total, parts)
    return [share + (n < extra) for n in range(parts)]


def posts_needed(rate: int, duration_s: float) -> int:
    """Targets enough for every request of a run at `rate`, with room for the tool's catch-up."""
    return math.ceil(rate * duration_s * 1.1) + 10
