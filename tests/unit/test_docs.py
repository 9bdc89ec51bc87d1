"""The docs stay true to the tree: every test they name exists, every relative link resolves,
and every failure mode names the test that proves it (or says plainly that none does yet)."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

from mesh.components.kafka import load_topics
from mesh.compose.document import GRAFANA_PORT
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import load

DOCS = [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]
FAILURE_MODES = REPO_ROOT / "docs" / "failure-modes.md"
DIAGRAM = REPO_ROOT / "docs" / "diagrams" / "architecture.py"
NOT_COVERED = "not covered yet"

# `tests/chaos/test_x.py::test_name` (a parametrized case's `[id]` may follow).
TEST_REF = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)")
# A path to a Python file under tests/ or bench/, with or without a test name after it.
PY_PATH = re.compile(r"(?<![\w/])((?:tests|bench)/[\w/]+\.py)\b")
# A port written the way the docs write them: `:8443`, `127.0.0.1:9202`, `localhost:19101`.
PORT_REF = re.compile(r"(?<![\w.:])(?:127\.0\.0\.1|localhost)?:(\d{4,5})\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


@cache
def functions_in(path: Path) -> frozenset[str]:
    """Names of the functions defined in a module, at top level or in its classes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in tree.body:
        bodies = node.body if isinstance(node, ast.ClassDef) else [node]
        found |= {n.name for n in bodies if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return frozenset(found)


def prose(text: str) -> str:
    """The text without code blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The headings' anchors and the explicit `<a id="...">` ones."""
    text = FENCE.sub("", path.read_text())
    headings = {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}
    return frozenset(headings | set(re.findall(r'<a id="([^"]+)"', text)))


def test_the_docs_are_there() -> None:
    names = {p.name for p in DOCS}
    expected = {
        "architecture.md", "protocols.md", "service-discovery.md", "gateway.md", "messaging.md",
        "failure-modes.md", "mesh-config.md", "README.md",
    }  # fmt: skip
    assert expected <= names, expected - names


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_named_test_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for path in sorted(set(PY_PATH.findall(text))):
        if not (REPO_ROOT / path).is_file():
            missing.append(f"{path}: no such file")
    for path, name in sorted(set(TEST_REF.findall(text))):
        module = REPO_ROOT / path
        if module.is_file() and name not in functions_in(module):
            missing.append(f"{path}::{name}: no such test function")
    assert not missing, f"{rel(doc)} names what does not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{rel(doc)} has broken links: {broken}"


def table_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in `text`, as lists of cells (headers dropped)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: "):
            rows.pop()  # the line above the separator is the header
            continue
        rows.append(cells)
    return rows


def failure_rows() -> list[list[str]]:
    rows = table_rows(FAILURE_MODES.read_text())
    assert rows, "docs/failure-modes.md has no table"
    return rows


def test_every_failure_mode_names_its_test_or_says_it_has_none() -> None:
    rows = failure_rows()
    unproven = [
        row[0] for row in rows if not TEST_REF.search(row[-1]) and NOT_COVERED not in row[-1]
    ]
    assert not unproven, f"failure modes with neither a test nor {NOT_COVERED!r}: {unproven}"


def test_the_failure_modes_cover_the_architecture_table() -> None:
    """Every fault of docs/architecture.md's failure table has its row in failure-modes.md."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    section = re.split(r"^## .*Failure handling.*$", text, maxsplit=1, flags=re.MULTILINE)
    assert len(section) == 2, "docs/architecture.md has no Failure handling section"
    body = re.split(r"^## ", section[1], maxsplit=1, flags=re.MULTILINE)[0]
    faults = {row[0] for row in table_rows(body)}
    assert faults, "docs/architecture.md's Failure handling section has no table"
    missing = faults - {row[0] for row in failure_rows()}
    assert not missing, f"faults without a row in docs/failure-modes.md: {missing}"


def test_the_committed_diagram_source_matches_the_topology() -> None:
    spec = importlib.util.spec_from_file_location("architecture_diagram", DIAGRAM)
    assert spec is not None and spec.loader is not None
    diagram = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagram)
    assert diagram.DOT_FILE.read_text() == diagram.render_dot(load()), (
        "docs/diagrams/architecture.dot is stale: run `python docs/diagrams/architecture.py`"
    )


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_named_topic_and_instance_exists(doc: Path) -> None:
    """Topic names (`payment-tasks`, `order-events.dlq`) and process names (`payments-2`,
    `kafka-3`, `payments-worker-1`) are the ones mesh/kafka/topics.yaml and the topology have."""
    t = load()
    topics = {spec.name for spec in load_topics()}
    processes = {i.id for i in t.instances()} | {e.id for e in t.edge.instances}
    processes |= {n.name for n in t.kafka.nodes}
    processes |= {name for workers in t.workers for name in workers.instances}
    prefixes = {s.name for s in t.services} | {w.name for w in t.workers} | {"edge", "kafka"}
    alternatives = "|".join(sorted(prefixes, key=len, reverse=True))
    text = doc.read_text()
    named_topics = set(re.findall(r"(?<![\w/-])([a-z]+-(?:events|tasks)(?:\.dlq)?)\b", text))
    named_processes = set(re.findall(rf"(?<![\w/-])((?:{alternatives})-\d+)\b", text))
    unknown = sorted((named_topics - topics) | (named_processes - processes))
    assert not unknown, f"{rel(doc)} names topics or processes that do not exist: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_port_written_as_colon_port_is_one_the_runtime_opens(doc: Path) -> None:
    """`:8443`, `127.0.0.1:9202`: a port the topology gives out (or Grafana's, compose only)."""
    known = set(load().all_ports().values()) | {GRAFANA_PORT}
    named = {int(port) for port in PORT_REF.findall(doc.read_text())}
    assert not named - known, f"{rel(doc)} names ports nothing opens: {sorted(named - known)}"
