"""Every query of every Grafana dashboard, run against the native Prometheus after real traffic:
it parses, every metric it names is scraped, and it returns data (a panel that is legitimately
empty in a healthy system is written to return 0, so Grafana shows 0, not "No data")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import product

import httpx
import pytest

from mesh.components import ratelimit
from mesh.runtime.supervisor import Mesh
from mesh.topology import Topology
from tests.grafana import Target, dashboards, targets
from tests.support import wait_for

ITEMS = [{"productId": "book", "quantity": 1}]
# What Grafana puts in for its own variables; $__rate_interval is 4 x the 5 s scrape interval,
# rounded up here so a fresh mesh's rates already cover two scrapes.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")
# Words of PromQL that are not metric names (aggregations and functions are followed by "(").
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}  # fmt: skip
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


@pytest.fixture(scope="module")
def prometheus(mesh: Mesh) -> Iterator[httpx.Client]:
    base = f"http://{mesh.topology.bind_host}:{mesh.topology.prometheus_port}"
    with httpx.Client(base_url=base, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def traffic(edge: httpx.Client, topology: Topology) -> None:
    """Orders through the edge, one of them queued (Kafka, a payment worker), and reads. The
    queued one's Kafka metrics arrive later: the tests below poll until they do."""
    over_a_limit(topology)
    refused_exchange(topology)
    for _ in range(2):
        assert edge.post("/orders", json={"userId": "alice", "items": ITEMS}).status_code == 201
    queued = edge.post("/orders", json={"userId": "alice", "items": ITEMS},
                       headers={"Prefer": "respond-async"})  # fmt: skip
    assert queued.status_code == 202, queued.text
    assert edge.get("/orders", params={"userId": "alice"}).status_code == 200
    assert edge.get("/notifications").status_code == 200
    assert edge.get("/web/api/me").status_code == 200


def refused_exchange(topology: Topology) -> None:
    """One token exchange auth refuses (the check the edge's token-exchange filter asks), so the
    refusals panel has data."""
    edge = f"http://{topology.bind_host}:{topology.edge.http_port}"
    refused = httpx.get(f"{edge}/auth/ext-authz/orders", headers={"Authorization": "Bearer a.b.c"})
    assert refused.status_code == 401, refused.text


def over_a_limit(topology: Topology) -> None:
    """One refusal by the edge's rate-limit service, so its over-limit counter exists (it is
    exported from the first one on). Asked directly, for a user no request comes from: one
    through the edge would spend the budget of a user other tests need."""
    limit = topology.edge.per_user_limit.requests
    descriptor = {"entries": [{"key": ratelimit.PER_USER_KEY, "value": "dashboards-probe"}]}
    refused = httpx.post(
        f"http://{topology.bind_host}:{topology.ratelimit_ports.http}/json",
        json={"domain": ratelimit.DOMAIN, "descriptors": [descriptor], "hits_addend": limit + 1},
        timeout=5.0,
    )
    assert refused.status_code == 429, refused.text


def query(prometheus: httpx.Client, promql: str) -> list[dict]:
    body = prometheus.get("/api/v1/query", params={"query": promql}).json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


def variable_values(prometheus: httpx.Client, dashboard: dict) -> dict[str, list[str]]:
    """Each template variable's values, from its own label_values() query."""
    values = {}
    for variable in dashboard["templating"]["list"]:
        metric, label = LABEL_VALUES.fullmatch(variable["query"]["query"]).groups()
        resp = prometheus.get(f"/api/v1/label/{label}/values", params={"match[]": metric})
        values[variable["name"]] = resp.json()["data"]
    return values


@pytest.fixture(scope="module")
def queries(
    prometheus: httpx.Client, topology: Topology, traffic: None
) -> list[tuple[Target, str]]:
    """Every query with Grafana's variables filled in: each variable as "All" (Grafana's regex
    of every value) and as each single value. Every `$service` offers every service once the
    traffic has reached each (a service's request metrics exist from its first request)."""
    services = {s.name for s in topology.services}

    def resolved() -> dict[str, dict[str, list[str]]]:
        values = {uid: variable_values(prometheus, d) for uid, d in by_uid.items()}
        short = {f"{uid} ${name}": services - set(v)
                 for uid, variables in values.items() for name, v in variables.items()
                 if services - set(v)}  # fmt: skip
        assert not short, f"variables without these services: {short}"
        return values

    by_uid = {d["uid"]: d for d in dashboards().values()}
    values = wait_for(resolved, timeout=60, what="every $service to offer every service",
                      interval=1)  # fmt: skip
    out = []
    for uid, dashboard in by_uid.items():
        variables = values[uid]
        choices = [[f"({'|'.join(v)})", *v] for v in variables.values()]
        for target, picked in product(list(targets(dashboard)), product(*choices)):
            expr = target.expr
            for name, value in [*zip(variables, picked, strict=True), *GRAFANA_VARIABLES.items()]:
                expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
            out.append((target, expr))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a query selects (strings, matchers, ranges and label lists removed)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", LABEL_LISTS.sub(" ", bare))
    words = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", bare)
    return {w for w in words if w.lower() not in KEYWORDS}


def test_metric_names_are_found_in_a_query() -> None:
    expr = ('sum by (service, le) (rate(x_bucket{service=~"a|b"}[1m])) / clamp_min(sum(y), 1e-9)'
            " or 0 * up{job='z'} or vector(0)")  # fmt: skip
    assert metric_names(expr) == {"x_bucket", "y", "up"}


def test_every_dashboard_query_parses(prometheus: httpx.Client, queries) -> None:
    for _, expr in queries:
        query(prometheus, expr)  # asserts Prometheus answered "success"


def test_every_metric_the_dashboards_query_is_scraped(
    prometheus: httpx.Client, queries, traffic: None
) -> None:
    wanted = {name for target, _ in queries for name in metric_names(target.expr)}

    def none_missing() -> bool:
        known = set(prometheus.get("/api/v1/label/__name__/values").json()["data"])
        assert wanted <= known, f"not in Prometheus: {sorted(wanted - known)}"
        return True

    wait_for(none_missing, timeout=60, what="every metric the dashboards query", interval=2)


def test_every_dashboard_query_returns_data(
    prometheus: httpx.Client, queries, traffic: None
) -> None:
    def all_have_data() -> bool:
        empty = [f"{t.dashboard} / {t.panel}: {expr}" for t, expr in queries
                 if not query(prometheus, expr)]  # fmt: skip
        assert not empty, "no data:\n" + "\n".join(empty)
        return True

    wait_for(all_have_data, timeout=90, what="every dashboard query to return data", interval=2)
