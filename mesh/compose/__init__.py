"""compose.yaml, generated from mesh/topology.yaml: the native runtime's components, names,
ports and environment as containers. `mesh compose` writes it (and the compose configs of
Prometheus and Jaeger), `mesh compose --check` fails when a committed file differs from what the
topology gives.

What differs from the native runtime, and why (docs/runtime.md, "Running with docker compose"):
- Where things are: the compose placement (mesh/placement.py `ComposePlacement`). Every
  container has its own address on one bridge network. Those whose address is registered in
  Consul or handed to Envoy (Consul, Jaeger, each service instance, the edge, the rate-limit
  service) get a fixed one in the topology's order; a sidecar shares its app's network
  namespace, so its upstream listeners are on 127.0.0.1 and their local_bind_ports are the
  native ones. Every generator is the native runtime's, given this placement.
- Secrets are generated at the first start by the one-shot `init` container into the `state`
  volume (`python -m mesh.compose init`, the native code with the volume as state dir), never
  written into compose.yaml. Services get their database password from a pgpass file
  (PGPASSFILE) instead of inside SHOPMESH_DATABASE_URL.
- Prometheus finds the service instances through Consul (`consul_sd_configs`); the native
  Debian build has no Consul discovery and uses the file_sd bridge (mesh/runtime/consul_sd.py).

The package: `document` assembles compose.yaml (and the compose configs of Prometheus and
Jaeger) from the generators of mesh/components with the compose placement; `files` writes and
checks the committed files; `volume` is the state volume's layout; `steps` are what runs in the
containers (`python -m mesh.compose init | bootstrap | worker-ready GROUP`).
"""
