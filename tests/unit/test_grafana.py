"""The Grafana provisioning and dashboards hold together: unique uids, every query on a provisioned
data source, variables defined, data source ports the topology's, compose mounting the files
where the provisioning reads them, every dashboard documented.
(tests/integration/test_dashboards.py runs every query against the native Prometheus.)"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from mesh.components import prometheus
from mesh.compose import document
from mesh.placement import ComposePlacement
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import load
from tests.grafana import DASHBOARDS_DIR, PROVISIONING_DIR, dashboards, panels, targets

GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}
DASHBOARDS = dashboards()


def datasources() -> dict[str, dict]:
    raw = yaml.safe_load((PROVISIONING_DIR / "datasources" / "datasources.yaml").read_text())
    return {source["uid"]: source for source in raw["datasources"]}


def test_there_are_dashboards_with_unique_uids_and_titles() -> None:
    assert len(DASHBOARDS) >= 5
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_well_formed(path) -> None:
    dashboard = DASHBOARDS[path]
    assert dashboard["schemaVersion"] >= 39
    assert len(dashboard["uid"]) <= 40  # Grafana's limit
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_query_uses_a_provisioned_data_source() -> None:
    provisioned = set(datasources())
    for dashboard in DASHBOARDS.values():
        for panel in panels(dashboard):
            used = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            assert {ref["uid"] for ref in used} <= provisioned, panel["title"]
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] in provisioned, variable["name"]


def test_every_variable_a_query_uses_is_defined() -> None:
    for dashboard in DASHBOARDS.values():
        defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_VARIABLES
        for target in targets(dashboard):
            used = set(re.findall(r"\$\{?(\w+)", target.expr))
            assert used <= defined, f"{target.dashboard} / {target.panel}: {used - defined}"


def test_the_data_sources_point_at_the_topology_ports() -> None:
    sources, topology = datasources(), load()
    prom = urlsplit(sources["prometheus"]["url"])
    assert (prom.hostname, prom.port) == ("prometheus", topology.prometheus_port)
    # Grafana's $__rate_interval is four times this: it must be Prometheus' scrape interval.
    assert sources["prometheus"]["jsonData"]["timeInterval"] == prometheus.SCRAPE_INTERVAL
    jaeger = urlsplit(sources["jaeger"]["url"])
    assert (jaeger.hostname, jaeger.port) == ("jaeger", topology.jaeger.ports.ui)


def test_compose_mounts_the_provisioning_and_the_dashboards_where_grafana_reads_them() -> None:
    raw = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "dashboards.yaml").read_text())
    [provider] = raw["providers"]
    assert provider["type"] == "file"
    topology = load()
    doc = document.document(topology, ComposePlacement.of(topology))
    volumes = doc["services"]["grafana"]["volumes"]
    mounts = {target: REPO_ROOT / source for source, target, *_ in (v.split(":") for v in volumes)}
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING_DIR
    assert mounts[provider["options"]["path"]] == DASHBOARDS_DIR
    assert (PROVISIONING_DIR / "datasources").is_dir() and DASHBOARDS_DIR.is_dir()


def test_every_dashboard_is_documented() -> None:
    docs = (REPO_ROOT / "docs" / "observability.md").read_text()
    for path, dashboard in DASHBOARDS.items():
        assert f"`{path.name}`" in docs and dashboard["title"] in docs, path.name
