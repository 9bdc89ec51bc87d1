# Thin wrappers; the real work is in the `mesh` command (mesh/runtime) and pytest.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up down status install test test-kube lint bench screenshots

$(BIN)/mesh: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/mesh
	$(BIN)/mesh install

up: $(BIN)/mesh
	$(BIN)/mesh up

down: $(BIN)/mesh
	$(BIN)/mesh down

status: $(BIN)/mesh
	$(BIN)/mesh status

# mypy (configured in pyproject.toml) reads the gRPC stubs generated from protos/: made first,
# as `mesh install` makes them (nothing to do when they are current). Then the pinned Python
# dependencies against PyPI's vulnerability records: fails on a known one (mesh/runtime/audit.py
# says why not pip-audit, and what it cannot see from here).
lint: $(BIN)/mesh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -c 'from mesh.runtime.protos import ensure_generated; ensure_generated()'
	$(BIN)/mypy
	$(BIN)/python -m mesh.runtime.audit

# Provisions everything, lints, then runs unit tests and the tests against the real native mesh
# (tests/browser drives Debian's Chromium through the web front end); then, in a session of
# their own, the tests of the whole mesh across network-namespace hosts (root): the native
# mesh is down by then, so the two full meshes never share the 2 cores.
test: $(BIN)/mesh
	$(BIN)/mesh install
	$(MAKE) lint
	$(BIN)/pytest tests/unit tests/integration tests/security tests/chaos tests/browser
	$(BIN)/pytest tests/hosts

# The Helm chart installed into a real Kubernetes API server (tests/kube, docs/kubernetes.md):
# provisions the control plane first (`mesh install --kube`: kube-apiserver, -controller-manager
# and -scheduler built from the Go module proxy, about 50 minutes the first time on 2 cores;
# etcd from Debian; kwok), then installs the chart once per values file. Long: not in `make test`.
test-kube: $(BIN)/mesh
	$(BIN)/mesh install --kube
	$(BIN)/pytest tests/kube -o timeout=1800

# Load benchmarks of the running mesh (`mesh up -d` first): writes docs/benchmarks.md and its
# plots anew. Not a test: nothing in it passes or fails. One scenario: `mesh bench --help`.
bench: $(BIN)/mesh
	$(BIN)/python -m bench

# The web front end's main pages of the running mesh (`mesh up -d` first) as PNGs in
# docs/screenshots, shown in the README's tour.
screenshots: $(BIN)/mesh
	$(BIN)/mesh screenshots
