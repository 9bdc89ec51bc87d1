"""Targets from Consul catalog entries, the file_sd files, and the Prometheus config around them."""

import json
from pathlib import Path

from mesh.components import prometheus
from mesh.placement import NativePlacement
from mesh.runtime import consul_sd
from mesh.runtime.paths import StateDir
from mesh.runtime.prometheus import discovery_spec, native_rule_files, sd_dir
from mesh.topology import load


def service_entry(service_id: str, name: str, meta: dict) -> dict:
    return {
        "Address": "127.0.0.1",
        "ServiceID": service_id,
        "ServiceName": name,
        "ServiceKind": "",
        "ServiceAddress": "127.0.0.1",
        "ServiceMeta": meta,
    }


def sidecar_entry(service_id: str, name: str, config: dict) -> dict:
    return {
        "Address": "127.0.0.1",
        "ServiceID": f"{service_id}-sidecar-proxy",
        "ServiceName": f"{name}-sidecar-proxy",
        "ServiceKind": "connect-proxy",
        "ServiceAddress": "127.0.0.1",
        "ServiceMeta": {},
        "ServiceProxy": {
            "DestinationServiceName": name,
            "DestinationServiceID": service_id,
            "Config": config,
        },
    }


ENTRIES = [
    service_entry("payments-2", "payments", {"version": "1", "metrics_port": "9406"}),
    service_entry("payments-1", "payments", {"version": "1", "metrics_port": "9403"}),
    service_entry("edge-1", "edge", {}),
    service_entry("consul", "consul", {"raft_version": "3"}),
    sidecar_entry("payments-1", "payments", {"envoy_prometheus_bind_addr": "127.0.0.1:9503"}),
    sidecar_entry("edge-1", "edge", {"envoy_prometheus_bind_addr": "127.0.0.1:9500"}),
    sidecar_entry("old-1", "old", {}),
]


def test_each_instance_with_a_metrics_port_is_a_services_target() -> None:
    assert consul_sd.service_targets(ENTRIES) == [
        {
            "targets": ["127.0.0.1:9403"],
            "labels": {"instance": "payments-1", "service": "payments"},
        },
        {
            "targets": ["127.0.0.1:9406"],
            "labels": {"instance": "payments-2", "service": "payments"},
        },
    ]


def test_each_sidecar_with_a_prometheus_listener_is_an_envoy_target() -> None:
    assert consul_sd.envoy_targets(ENTRIES) == [
        {
            "targets": ["127.0.0.1:9500"],
            "labels": {"instance": "edge-1-sidecar", "service": "edge"},
        },
        {
            "targets": ["127.0.0.1:9503"],
            "labels": {"instance": "payments-1-sidecar", "service": "payments"},
        },
    ]


def test_target_files_are_replaced_whole_and_only_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / prometheus.SERVICES_FILE
    groups = consul_sd.service_targets(ENTRIES)
    assert consul_sd.write_atomically(path, groups)
    assert json.loads(path.read_text()) == groups
    assert not consul_sd.write_atomically(path, groups)
    assert consul_sd.write_atomically(path, groups[:1])
    assert json.loads(path.read_text()) == groups[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [prometheus.SERVICES_FILE]


def test_prometheus_discovers_services_and_sidecars_from_the_files_and_keeps_the_rest_static(
    tmp_path: Path,
) -> None:
    topology = load()
    state = StateDir(tmp_path)
    config = prometheus.config(
        topology,
        NativePlacement.of(topology),
        rule_files=native_rule_files(),
        discovery=prometheus.FileDiscovery(sd_dir(state)),
        consul_token_file="/token",
        consul_ca_file="/ca.pem",
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["services"]["file_sd_configs"][0]["files"] == [
        str(sd_dir(state) / prometheus.SERVICES_FILE)
    ]
    assert jobs["envoy"]["file_sd_configs"][0]["files"] == [
        str(sd_dir(state) / prometheus.ENVOY_FILE)
    ]
    assert jobs["envoy"]["metrics_path"] == "/metrics"
    workers = [c["labels"]["instance"] for c in jobs["services"]["static_configs"]]
    assert workers == [name for w in topology.workers for name in w.instances]
    kafka = jobs["kafka"]["static_configs"]
    assert [c["targets"] for c in kafka] == [
        [f"127.0.0.1:{node.metrics_port}"] for node in topology.kafka.nodes
    ]
    assert {"edge", "consul"} <= set(jobs)


def test_the_discovery_process_is_ready_once_both_files_are_written(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    spec = discovery_spec(load(), NativePlacement.of(load()), state)
    assert spec.ready is not None and spec.before_start is not None
    out = sd_dir(state)
    out.mkdir(parents=True)
    (out / prometheus.SERVICES_FILE).write_text("[]")
    (out / prometheus.ENVOY_FILE).write_text("[]")
    spec.before_start()  # files of an earlier run are not this run's targets
    assert spec.ready() == "services.json, envoy.json not written yet"
    (out / prometheus.SERVICES_FILE).write_text("[]")
    (out / prometheus.ENVOY_FILE).write_text("[]")
    assert spec.ready() is None
