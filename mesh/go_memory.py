"""How the mesh's Go processes off the request path (the Consul agents, Prometheus, Jaeger)
collect garbage. Go lets the heap grow to twice what is live (GOGC=100) before it collects; at
50 it collects at one and a half times. On the full mesh (2026-12-07) a Consul server restarted
with it took 82 MB against 95 and 98 MB for the two without, and Prometheus's next collection
was due at 124 MB instead of 199 MB. Their idle CPU rose by 0.9 points of the machine in
`make bench`'s 15 s idle window, within its noise (docs/performance.md). The rate-limit
service, called on every request through the edge, trades memory for CPU the other way
(mesh/components/ratelimit.py)."""

from __future__ import annotations

GO_ENV = {"GOGC": "50"}
