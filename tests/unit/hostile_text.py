"""What a client can send in a text field, as hypothesis strategies, and what Postgres can store.

`st.text()` leaves out surrogates; these strategies do not. A lone surrogate reaches a service as
a JSON "\\ud800" escape (`json.dumps` writes one, ensure_ascii being its default) or, in a URL or
a form, as the bytes of its surrogatepass encoding (%ED%A0%80), which are not UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import quote_from_bytes

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import strategies as st

# Every code point, surrogates (category Cs) included.
ANY_CHARACTER = st.characters(exclude_categories=())
TROUBLE = ["\x00", "\ud800", "\udfff", "\udcff", "\x01", "\x1f", "\x7f", "\x85", "\t", "\n"]
TROUBLE += ["\u2028", "\ufeff", "\ufffd", "\U0010ffff", "%", "&", "=", "+", "/", "?", "#", " "]


def hostile_text_up_to(longest: int) -> st.SearchStrategy[str]:
    """Any text, biased towards trouble, up to `longest` characters."""
    return st.one_of(
        st.text(ANY_CHARACTER, max_size=40),
        st.lists(st.one_of(ANY_CHARACTER, st.sampled_from(TROUBLE)), max_size=12).map("".join),
        # Long ones, around and far beyond every length limit.
        st.builds(
            lambda unit, count: unit * count,
            st.sampled_from(["a", "é", "\x00", "\ud800", "😀"]),
            st.integers(min_value=60, max_value=longest),
        ),
    )


hostile_text = hostile_text_up_to(9000)


def hostile_bytes_up_to(longest: int) -> st.SearchStrategy[bytes]:
    """Bytes of a URL query, path segment or form value before percent-decoding: any bytes, and
    the bytes of hostile text (lone surrogates as the invalid UTF-8 of their surrogatepass
    form), from text of up to `longest` characters (4 bytes each at most, 12 once encoded)."""
    return st.one_of(
        st.binary(max_size=40),
        hostile_text_up_to(longest).map(lambda text: text.encode("utf-8", "surrogatepass")),
    )


# One parameter, percent-encoded, that still fits a request line aiohttp's parser takes (8190
# bytes; it answers a longer one with a plain 400 itself, before any service code runs).
hostile_bytes = hostile_bytes_up_to(600)


def _passes_the_http_parser(byte: int) -> bool:
    return byte == 0x09 or (byte >= 0x20 and byte != 0x7F)


# Bytes aiohttp's HTTP parser lets through in a header value (it answers other control
# characters with a plain 400 itself, before any service code runs; so does the edge for NUL,
# CR and LF). Bytes that are not UTF-8 reach the service as lone surrogates.
header_value_bytes = st.binary(min_size=1, max_size=80).map(
    lambda raw: bytes(b for b in raw if _passes_the_http_parser(b))
)


def percent_encoded(raw: bytes) -> str:
    return quote_from_bytes(raw, safe="")


def ascii_json(value: object) -> bytes:
    """`value` as JSON with every non-ASCII character escaped: lone surrogates as \\udXXX."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def store_as_postgres_would(*values: object) -> None:
    """Fail as asyncpg and Postgres do for text a `text` column cannot hold: asyncpg cannot
    encode a lone surrogate, Postgres refuses NUL."""
    for value in values:
        if isinstance(value, str):
            value.encode("utf-8")
            if "\x00" in value:
                raise asyncpg.exceptions.CharacterNotInRepertoireError(
                    'invalid byte sequence for encoding "UTF8": 0x00'
                )


def assert_client_error_or_success(status: int, content_type: str, body: bytes) -> None:
    """Never a 5xx; a 4xx is a problem document whose status is the HTTP status."""
    assert status < 500, body
    if status >= 400:
        assert content_type == "application/problem+json", (status, content_type, body)
        assert json.loads(body)["status"] == status


def raw_http(app: web.Application, head: bytes, body: bytes = b"") -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of one request written to `app` byte for byte: aiohttp's
    client sends only UTF-8 header values. `head` is the request line and headers."""

    async def go() -> bytes:
        async with TestServer(app) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            framing = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            writer.write(head + framing + body)
            response = await reader.read()
            writer.close()
            return response

    head_part, _, body_part = asyncio.run(go()).partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), body_part


class PostgresLikePool:
    """A pool (and its connection) that finds nothing, stores nothing, and fails on every text
    argument as asyncpg and Postgres would: service-layer code runs to its SQL and no further."""

    def __init__(self) -> None:
        self.queries = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[PostgresLikePool]:
        yield self

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    def _send(self, args: tuple[object, ...]) -> None:
        self.queries += 1
        store_as_postgres_would(*args)

    async def fetchrow(self, _sql: str, *args: object) -> None:
        self._send(args)

    async def fetchval(self, _sql: str, *args: object) -> None:
        self._send(args)

    async def fetch(self, _sql: str, *args: object) -> list:
        self._send(args)
        return []

    async def execute(self, _sql: str, *args: object) -> str:
        self._send(args)
        return "OK 0"
