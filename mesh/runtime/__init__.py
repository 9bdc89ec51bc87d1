"""The native backend: every component of the mesh as a local process on this host, as the
native placement puts it (mesh/placement.py), provisioned into the cache, supervised, and the
`mesh` CLI. The configs the processes get come from mesh/components and mesh/wiring.py."""
