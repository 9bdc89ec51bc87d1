"""The alert and recording rules parse, and behave as their unit tests say (promtool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mesh.components import prometheus
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


def _read(pattern: str) -> set[str]:
    """The names matching `pattern` in every rule, dashboard and piece of code but this test."""
    return {
        name
        for folder in ("observability", "mesh", "services", "tests", "bench")
        for path in (REPO_ROOT / folder).rglob("*")
        if path.suffix in {".yml", ".yaml", ".json", ".py"}
        and path.is_file()
        and path != Path(__file__)
        for name in re.findall(pattern, path.read_text())
    }


def test_the_envoy_buckets_dropped_at_scrape_are_read_by_no_rule_or_dashboard() -> None:
    dropped = re.compile(prometheus.ENVOY_UNREAD_BUCKETS[0]["regex"])
    read = _read(r"envoy_[a-z_]+_bucket")
    assert "envoy_http_downstream_rq_time_bucket" in read
    assert not {name for name in read if dropped.fullmatch(name)}
    assert dropped.fullmatch("envoy_cluster_upstream_cx_length_ms_bucket")


def test_every_envoy_metric_a_rule_dashboard_or_test_reads_is_kept_from_the_sidecars() -> None:
    (keep,) = prometheus.SIDECAR_METRICS_READ
    kept = re.compile(keep["regex"])
    read = _read(r"envoy_(?:cluster|http|listener)_[a-z0-9_]+") - {
        "envoy_http_conn_manager_prefix",  # a label
        "envoy_listener_tracing_json",  # a setting
    }
    assert {"envoy_http_downstream_rq_xx", "envoy_cluster_upstream_rq_retry"} <= read
    assert {name for name in read if not kept.fullmatch(name)} == set()
    assert not kept.fullmatch("envoy_cluster_upstream_cx_connect_ms_bucket")
    assert not kept.fullmatch("envoy_server_initialization_time_ms_bucket")


def test_every_consul_metric_a_rule_or_dashboard_reads_is_kept_from_the_agents() -> None:
    (keep,) = prometheus.CONSUL_METRICS_READ
    kept = re.compile(keep["regex"])
    read = _read_in_queries(r"consul_[A-Za-z_]+")
    read -= {"consul_destination_service"}  # a label of the sidecars' Envoy metrics
    assert {"consul_autopilot_healthy", "consul_server_isLeader"} <= read
    assert {name for name in read if not kept.fullmatch(name)} == set()
    assert not kept.fullmatch("consul_raft_boltdb_storeLogs")


def _read_in_queries(pattern: str) -> set[str]:
    """The names matching `pattern` in the queries of the dashboards and the rules."""
    folder = REPO_ROOT / "observability"
    texts = [path.read_text() for path in folder.rglob("*.json")]
    texts += [path.read_text() for path in (RULES / "rules").glob("*.yml")]
    return {name for text in texts for name in re.findall(pattern, text)}
