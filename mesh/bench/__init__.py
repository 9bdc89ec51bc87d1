"""Load benchmarks of the live mesh with real load tools (`mesh bench`, `make bench`).

vegeta (open model at a constant rate, or closed loop for a ceiling), h3load (vegeta over
HTTP/3), ghz (gRPC) and wrk, all provisioned by `mesh install`, drive the mesh through the real
edge with its limits on; this package builds their targets, runs them and reads their reports.
"""
