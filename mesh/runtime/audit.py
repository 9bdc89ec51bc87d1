"""`make lint`'s dependency audit (`python -m mesh.runtime.audit`): every distribution that
pyproject.toml's pinned requirements bring in (its dependencies and its `dev` extra, and theirs,
as installed in this environment) checked against the known vulnerabilities PyPI publishes.

Why not pip-audit itself: it asks PyPI's per-release JSON API (`/pypi/<name>/<version>/json`)
or OSV (`api.osv.dev`). From these machines the first answers 404 for every release and the
second's name does not resolve, so pip-audit reports each package "not found on PyPI" and, without
`--strict`, passes having audited nothing. What they reach is PyPI's project JSON
(`/pypi/<name>/json`), whose `vulnerabilities` (OSV's records, as PyPI shows them) are those of
the project's newest release. Hence two grades of audit:

- installed == newest release: its vulnerabilities are exactly the installed one's. Any listed
  fails the audit.
- installed older than the newest: the newest release's vulnerabilities (still open upstream)
  fail the audit too, but one fixed between the installed release and the newest cannot be seen
  from here. Such packages are named as audited in part (a warning, not a failure: pins lag
  behind releases all the time).

A release whose every file was yanked fails the audit with PyPI's reason. A package PyPI cannot
be asked about fails it: nothing passes unaudited. docs/security.md says what this leaves open.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import ssl
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

PROJECT = "shopmesh"
EXTRAS = ("dev",)
PYPI_JSON = os.environ.get("SHOPMESH_PYPI_JSON", "https://pypi.org/pypi")

# Vulnerabilities known and judged not to apply, by any of their ids (OSV id or alias): each
# with the reason, which `make lint` prints every time.
IGNORED: dict[str, str] = {
    "GHSA-wj6h-64fc-37mp": (
        "CVE-2024-23342 (Minerva timing attack on python-ecdsa's P-256 signing; no fix planned): "
        "ecdsa comes in through python-jose, whose cryptography backend the project installs "
        "(python-jose[cryptography]) and which signs and verifies with `cryptography`, never "
        "loading ecdsa (tests/unit/test_audit.py checks); the project signs only RS256"
    ),
}


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    ids: tuple[str, ...]  # the record's id, then its aliases
    fixed_in: tuple[str, ...]
    ignored_because: str | None = None

    def line(self) -> str:
        fixed = ", ".join(self.fixed_in) or "no fixed release"
        text = f"{self.package} {self.version}: {' / '.join(self.ids)} ({fixed})"
        return f"{text}: ignored: {self.ignored_because}" if self.ignored_because else text


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    yanked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Older than the newest release: audited only for what is still open upstream.
    behind: dict[str, tuple[str, str]] = field(default_factory=dict)
    audited: int = 0

    @property
    def failed(self) -> bool:
        open_findings = [f for f in self.findings if f.ignored_because is None]
        return bool(open_findings or self.yanked or self.errors)


def closure(project: str = PROJECT, extras: Iterable[str] = EXTRAS) -> dict[str, str]:
    """The installed distributions `project` with `extras` requires, transitively: name → version
    (the project itself left out)."""
    found: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(project, frozenset(extras))]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while pending:
        name, wanted = pending.pop()
        key = (canonicalize_name(name), wanted)
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(name)
        if key[0] != canonicalize_name(project):
            found[key[0]] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(found.items()))


def judge(installed: Mapping[str, str], projects: Mapping[str, dict[str, Any] | str]) -> Report:
    """The report for `installed` (name → version) given each one's PyPI project JSON (or the
    error met asking for it)."""
    report = Report()
    for name, version in installed.items():
        project = projects[name]
        if isinstance(project, str):
            report.errors.append(f"{name} {version}: {project}")
            continue
        report.audited += 1
        newest = str(project["info"]["version"])
        if _older(version, newest):
            report.behind[name] = (version, newest)
        for record in project.get("vulnerabilities") or []:
            if record.get("withdrawn"):
                continue
            ids = (str(record["id"]), *(str(a) for a in record.get("aliases") or []))
            reason = next((IGNORED[i] for i in ids if i in IGNORED), None)
            report.findings.append(
                Finding(name, version, ids, tuple(record.get("fixed_in") or []), reason)
            )
        files = project.get("releases", {}).get(version) or []
        if files and all(f.get("yanked") for f in files):
            reason = files[0].get("yanked_reason") or "no reason given"
            report.yanked.append(f"{name} {version} was yanked from PyPI: {reason}")
    _merge_aliases(report)
    return report


def _older(version: str, newest: str) -> bool:
    try:
        return Version(version) < Version(newest)
    except InvalidVersion:
        return version != newest


def _merge_aliases(report: Report) -> None:
    """PyPI lists one vulnerability once per database (PYSEC-..., GHSA-...) with the other as
    alias: keep one finding per package and vulnerability."""
    kept: list[Finding] = []
    for finding in report.findings:
        same = next(
            (k for k in kept if k.package == finding.package and set(k.ids) & set(finding.ids)),
            None,
        )
        if same is None:
            kept.append(finding)
        elif same.ignored_because is None and finding.ignored_because is not None:
            kept[kept.index(same)] = Finding(
                same.package, same.version, same.ids, same.fixed_in, finding.ignored_because
            )
    report.findings = kept


def fetch(names: Iterable[str], *, base: str = PYPI_JSON) -> dict[str, dict[str, Any] | str]:
    """Each project's JSON from PyPI, or the reason it could not be had."""
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    with httpx.Client(timeout=30.0, verify=context, follow_redirects=True) as client:

        def one(name: str) -> tuple[str, dict[str, Any] | str]:
            last = ""
            for _attempt in range(3):
                try:
                    resp = client.get(f"{base}/{name}/json")
                except httpx.HTTPError as exc:
                    last = f"{base}/{name}/json: {exc.__class__.__name__}: {exc}"
                    continue
                if resp.status_code >= 500:  # PyPI or its CDN for a moment: ask again
                    last = f"{base}/{name}/json answered {resp.status_code}"
                    time.sleep(1.0)
                    continue
                if resp.status_code != 200:
                    return name, f"{base}/{name}/json answered {resp.status_code}"
                project: dict[str, Any] = resp.json()
                return name, project
            return name, last

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(one, names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="also name the packages behind")
    args = parser.parse_args(argv)
    installed = closure()
    report = judge(installed, fetch(installed))
    for finding in report.findings:
        print(("ignored  " if finding.ignored_because else "VULNERABLE  ") + finding.line())
    for line in [*report.yanked, *report.errors]:
        print(f"FAILED  {line}")
    behind = ", ".join(f"{n} {v} (newest {new})" for n, (v, new) in report.behind.items())
    print(
        f"audit: {report.audited} of {len(installed)} distributions checked against PyPI's "
        f"vulnerability records; {len(report.behind)} older than their newest release, checked "
        f"only for what is still open upstream" + (f": {behind}" if args.verbose else "")
    )
    if report.failed:
        print("audit: FAILED (see the lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
