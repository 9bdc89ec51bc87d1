"""How every Envoy of the mesh gives memory back, and how the edge stops growing. Its allocator
(tcmalloc) keeps the free pages a load peak took until told otherwise: measured after `make
bench`, the edge's held 360 MB for 57 MB in use, and each loaded sidecar ~100 MB for ~20."""

from __future__ import annotations

from typing import Any

RELEASE_BYTES_PER_INTERVAL = 16 << 20
RELEASE_INTERVAL = "1s"

FIXED_HEAP = "envoy.resource_monitors.fixed_heap"
OVERLOAD_REFRESH = "0.25s"
# Share of the heap limit (the heap less its free pages) at which each action starts: give free
# memory back, then take no new connection (TCP listeners stop accepting; the QUIC listener
# drops new connections' packets, which matters most since nothing else bounds its
# connections), then answer every new request 503 at once.
OVERLOAD_ACTIONS = (
    ("envoy.overload_actions.shrink_heap", 0.90),
    ("envoy.overload_actions.stop_accepting_connections", 0.95),
    ("envoy.overload_actions.stop_accepting_requests", 0.98),
)


def allocator_manager() -> dict[str, str]:
    """The bootstrap's `memory_allocator_manager`: free pages go back 16 MiB a second."""
    return {
        "bytes_to_release": str(RELEASE_BYTES_PER_INTERVAL),
        "memory_release_interval": RELEASE_INTERVAL,
    }


def overload_manager(max_heap_mb: int) -> dict[str, Any]:
    """The bootstrap's `overload_manager`: OVERLOAD_ACTIONS against a heap of `max_heap_mb`."""
    return {
        "refresh_interval": OVERLOAD_REFRESH,
        "resource_monitors": [{
            "name": FIXED_HEAP,
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                "max_heap_size_bytes": str(max_heap_mb << 20),
            },
        }],
        "actions": [
            {"name": action, "triggers": [{"name": FIXED_HEAP, "threshold": {"value": share}}]}
            for action, share in OVERLOAD_ACTIONS
        ],
    }  # fmt: skip
