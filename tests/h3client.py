"""A minimal HTTP/3 client over aioquic, for the edge's QUIC listener."""

from __future__ import annotations

import asyncio

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent


class _Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._responses: dict[int, dict] = {}
        self._done: dict[int, asyncio.Future] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._http.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        response = self._responses.setdefault(event.stream_id, {"headers": [], "body": b""})
        if isinstance(event, HeadersReceived):
            response["headers"] += event.headers
        else:
            response["body"] += event.data
        if event.stream_ended and event.stream_id in self._done:
            self._done.pop(event.stream_id).set_result(response)

    async def get(self, authority: str, path: str, headers: dict[str, str]) -> dict:
        stream_id = self._quic.get_next_available_stream_id()
        self._done[stream_id] = asyncio.get_running_loop().create_future()
        self._http.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
            end_stream=True,
        )
        self.transmit()
        return await asyncio.wait_for(self._done[stream_id], timeout=10)


async def _get(host: str, port: int, path: str, headers: dict[str, str], cafile: str) -> dict:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile)
    async with connect(host, port, configuration=config, create_protocol=_Client) as client:
        return await client.get(f"localhost:{port}", path, headers)


def h3_get(
    host: str, port: int, path: str, headers: dict[str, str], cafile: str
) -> tuple[int, bytes]:
    """GET over HTTP/3 (QUIC): (status, body)."""
    status, _, body = h3_get_with_headers(host, port, path, headers, cafile)
    return status, body


def h3_get_with_headers(
    host: str, port: int, path: str, headers: dict[str, str], cafile: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET over HTTP/3 (QUIC): (status, the response's headers in order, body)."""
    response = asyncio.run(_get(host, port, path, headers, cafile))
    fields = [(name.decode(), value.decode()) for name, value in response["headers"]]
    status = next(value for name, value in fields if name == ":status")
    return int(status), [f for f in fields if not f[0].startswith(":")], response["body"]
