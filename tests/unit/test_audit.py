"""`make lint`'s dependency audit (mesh/runtime/audit.py), on PyPI project JSON made here: what
fails it, what it can only warn about, and that its one ignored vulnerability stays harmless."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from mesh.runtime import audit


def project(
    newest: str, *vulns: dict[str, Any], releases: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"info": {"version": newest}, "vulnerabilities": list(vulns), "releases": releases or {}}


def vuln(id_: str, *aliases: str, fixed_in: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": id_, "aliases": list(aliases), "fixed_in": list(fixed_in), "withdrawn": None}


def test_a_vulnerability_of_the_installed_release_fails_the_audit() -> None:
    report = audit.judge(
        {"lib": "1.0", "clean": "2.0"},
        {"lib": project("1.0", vuln("PYSEC-1", "CVE-1", fixed_in=("1.1",))),
         "clean": project("2.0")},
    )  # fmt: skip
    assert report.failed
    assert [f.line() for f in report.findings] == ["lib 1.0: PYSEC-1 / CVE-1 (1.1)"]
    assert report.audited == 2 and report.behind == {}


def test_one_vulnerability_listed_by_two_databases_is_one_finding() -> None:
    report = audit.judge(
        {"lib": "1.0"},
        {"lib": project("1.0", vuln("PYSEC-1", "GHSA-x", "CVE-1"), vuln("GHSA-x", "PYSEC-1"))},
    )
    assert len(report.findings) == 1


def test_an_ignored_vulnerability_is_shown_with_its_reason_and_passes(monkeypatch) -> None:
    monkeypatch.setattr(audit, "IGNORED", {"GHSA-x": "not reachable from our code"})
    report = audit.judge({"lib": "1.0"}, {"lib": project("1.0", vuln("PYSEC-1", "GHSA-x"))})
    assert not report.failed
    assert report.findings[0].line().endswith("ignored: not reachable from our code")


def test_a_withdrawn_record_is_no_finding() -> None:
    record = {**vuln("PYSEC-1"), "withdrawn": "2026-01-01T00:00:00Z"}
    assert not audit.judge({"lib": "1.0"}, {"lib": project("1.0", record)}).failed


def test_a_release_behind_the_newest_is_named_and_still_fails_on_what_is_open_upstream() -> None:
    report = audit.judge({"lib": "1.0"}, {"lib": project("1.2")})
    assert not report.failed and report.behind == {"lib": ("1.0", "1.2")}
    still_open = audit.judge({"lib": "1.0"}, {"lib": project("1.2", vuln("PYSEC-9"))})
    assert still_open.failed


def test_a_yanked_release_fails_the_audit_with_pypis_reason() -> None:
    files = [{"yanked": True, "yanked_reason": "CVE in the build"}]
    report = audit.judge({"lib": "1.0"}, {"lib": project("1.1", releases={"1.0": files})})
    assert report.failed and report.yanked == ["lib 1.0 was yanked from PyPI: CVE in the build"]


def test_a_package_pypi_could_not_be_asked_about_fails_the_audit() -> None:
    report = audit.judge({"lib": "1.0"}, {"lib": "https://pypi.org/pypi/lib/json answered 404"})
    assert report.failed and report.audited == 0
    assert report.errors == ["lib 1.0: https://pypi.org/pypi/lib/json answered 404"]


def test_the_audited_set_is_the_projects_pinned_requirements_and_theirs() -> None:
    installed = audit.closure()
    assert installed["asyncpg"] == "0.32.0"  # a dependency
    assert installed["pytest"] == "9.2.0"  # the dev extra
    assert "ecdsa" in installed  # python-jose's, transitively
    assert "cryptography" in installed  # through python-jose's [cryptography] extra too
    assert "shopmesh" not in installed


def test_the_ignored_ecdsa_vulnerability_is_not_reachable_ecdsa_is_never_loaded() -> None:
    """CVE-2024-23342 is in python-ecdsa's signing: the project's JWT code signs and verifies
    (RS256, ES256) through python-jose's cryptography backend, and never imports ecdsa."""
    code = (
        "import sys, services.common.auth.jwt, services.auth.tokens\n"
        "from jose import jwk\n"
        "from cryptography.hazmat.primitives.asymmetric import ec\n"
        "from cryptography.hazmat.primitives import serialization\n"
        "pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(\n"
        "    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,\n"
        "    serialization.NoEncryption())\n"
        "key = jwk.construct(pem, 'ES256')\n"
        "print(type(key).__module__, 'ecdsa' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["jose.backends.cryptography_backend", "False"]
