"""The public client's address, as the edge hands it on.

The edge sets `x-shopmesh-client-address` on every request it routes (replacing whatever a
client sent under that name) to the address of the client it serves: the TCP peer, or the
address in the balancer's PROXY protocol v2 header (mesh/components/edge.py). It reaches HTTP
services as a header and gRPC services (through the transcoder) as metadata.

So a request that carries it came from the public through the edge; one without it came from
inside the mesh (another service's call, which never carries it on) or straight to an
instance's loopback port. `X-Forwarded-For` is not used: its first entries are whatever the
client wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

CLIENT_ADDRESS_HEADER = "x-shopmesh-client-address"


def from_headers(headers: Mapping[str, str]) -> str | None:
    """The edge's client address from HTTP headers; None when the request did not come
    through the edge."""
    value = headers.get(CLIENT_ADDRESS_HEADER, "").strip()
    return value or None


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The edge's client address from gRPC metadata; None when the call did not come through
    the edge."""
    for key, value in metadata or ():
        if key == CLIENT_ADDRESS_HEADER and isinstance(value, str) and value.strip():
            return value.strip()
    return None
