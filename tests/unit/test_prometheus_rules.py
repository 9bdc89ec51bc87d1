"""The alert and recording rules parse, and behave as their unit tests say (promtool)."""

from __future__ import annotations

import subprocess

from mesh.runtime.paths import REPO_ROOT
from mesh.runtime.provision import PROMETHEUS, install_all

RULES = REPO_ROOT / "observability" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = install_all()[PROMETHEUS.name]["promtool"]
    return subprocess.run(
        [str(binary), *args], cwd=RULES / "tests", capture_output=True, text=True, timeout=60
    )


def test_every_rule_file_passes_promtool_check() -> None:
    files = sorted(str(p) for p in (RULES / "rules").glob("*.yml"))
    assert files
    proc = promtool("check", "rules", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alerts_fire_as_their_rule_tests_expect() -> None:
    tests = sorted(p.name for p in (RULES / "tests").glob("*.test.yml"))
    assert tests
    proc = promtool("test", "rules", *tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
