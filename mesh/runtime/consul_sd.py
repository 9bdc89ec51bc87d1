"""Prometheus targets from Consul's catalog, as `file_sd_configs` files.

Debian's Prometheus 2.42 is built without `consul_sd_configs` (`promtool check config` says
"field consul_sd_configs not found in type config.ScrapeConfig"), so this process does that
discovery instead: it watches the catalog with blocking queries and, after every change,
rewrites one JSON file per job (atomically: Prometheus never reads half a file and reloads it
through inotify at once).

- `services.json`: every service instance that publishes `metrics_port` in its service meta.
- `envoy.json`: every Connect sidecar that has `envoy_prometheus_bind_addr` in its Proxy.Config.

Like `consul_sd_configs`, every registered instance is a target whatever its health: a killed
instance stays registered (critical) until Consul reaps it, so Prometheus sees it down; one that
deregisters (a clean stop) disappears. Run by the supervisor as `python -m mesh.runtime.consul_sd`
before Prometheus; if Consul is unreachable it keeps the last files and retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from mesh.components.consul import TokenFile
from mesh.components.prometheus import ENVOY_FILE, SERVICES_FILE

log = logging.getLogger("consul_sd")

# How long a blocking query may wait for a change (Consul adds up to 1/16 of jitter).
WAIT = "5m"
WAIT_TIMEOUT_S = 5 * 60 * 17 / 16 + 10
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0

TargetGroup = dict[str, Any]


def service_targets(entries: Iterable[dict[str, Any]]) -> list[TargetGroup]:
    """A target per instance with a `metrics_port` meta, from /v1/catalog/service entries."""
    groups = []
    for entry in entries:
        port = (entry.get("ServiceMeta") or {}).get("metrics_port")
        if entry.get("ServiceKind") or not port:
            continue
        address = entry.get("ServiceAddress") or entry["Address"]
        groups.append({
            "targets": [f"{_host(address)}:{port}"],
            "labels": {"instance": entry["ServiceID"], "service": entry["ServiceName"]},
        })  # fmt: skip
    return sorted(groups, key=lambda g: g["labels"]["instance"])


def envoy_targets(entries: Iterable[dict[str, Any]]) -> list[TargetGroup]:
    """A target per Connect sidecar with an `envoy_prometheus_bind_addr`."""
    groups = []
    for entry in entries:
        proxy = entry.get("ServiceProxy") or {}
        bind = (proxy.get("Config") or {}).get("envoy_prometheus_bind_addr")
        if entry.get("ServiceKind") != "connect-proxy" or not bind:
            continue
        groups.append({
            "targets": [bind],
            "labels": {
                "instance": f"{proxy['DestinationServiceID']}-sidecar",
                "service": proxy["DestinationServiceName"],
            },
        })  # fmt: skip
    return sorted(groups, key=lambda g: g["labels"]["instance"])


def write_atomically(path: Path, groups: list[TargetGroup]) -> bool:
    """Replace `path` with `groups` as JSON unless it already holds them; True if written."""
    text = json.dumps(groups, indent=2) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class CatalogWatcher:
    """Blocking queries on /v1/catalog/services; every new index re-reads each service."""

    def __init__(self, client: httpx.Client, out: Path) -> None:
        self._client = client
        self._out = out
        self._index = 0

    def poll(self) -> None:
        """Wait for a catalog change (or the wait to run out) and rewrite the files."""
        resp = self._client.get(
            "/v1/catalog/services",
            params={"index": self._index, "wait": WAIT},
            timeout=WAIT_TIMEOUT_S,
        )
        resp.raise_for_status()
        index = int(resp.headers.get("X-Consul-Index", "0"))
        entries = [
            entry
            for name in sorted(resp.json())
            for entry in self._client.get(f"/v1/catalog/service/{name}").raise_for_status().json()
        ]
        for name, groups in ((SERVICES_FILE, service_targets(entries)),
                             (ENVOY_FILE, envoy_targets(entries))):  # fmt: skip
            if write_atomically(self._out / name, groups):
                log.info("%s: %d targets", name, len(groups))
        # Consul's rule: an index that goes backwards (a restarted server) starts over.
        self._index = index if index >= self._index else 0

    def run(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            try:
                self.poll()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("consul catalog not readable (%s); retrying in %.1fs", exc, delay)
                self._index = 0
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_INITIAL_S


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--consul", required=True, help="Consul's HTTPS API address (https://host:port)"
    )
    parser.add_argument("--out", required=True, type=Path, help="directory of the file_sd files")
    parser.add_argument(
        "--token-file", required=True, type=Path, help="file of the Consul token to read with"
    )
    parser.add_argument(
        "--ca-file",
        required=True,
        type=Path,
        help="the Consul CA's certificate, to check the agent",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    auth = TokenFile(args.token_file)
    verify = ssl.create_default_context(cafile=str(args.ca_file))
    with httpx.Client(base_url=args.consul, timeout=5.0, auth=auth, verify=verify) as client:
        CatalogWatcher(client, args.out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
