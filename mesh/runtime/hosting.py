"""Where a state dir's mesh runs, remembered in the state dir so that every later command
(`mesh status`, `down`, `kill`, `logs`, the watchdog) acts on the same placement without being
told: on this host (the native placement, the default: no record), or across the hosts of
docs/hosts.md (`mesh up --placement hosts`: the record names the hosts' network, whose names
and subnet a test may choose so that it never meets a user's hosts). `mesh down` removes the
hosts and keeps the record: the state dir's data (Consul's Raft peers, Kafka's and Patroni's
members) names the hosts' addresses, and starts on them only.
"""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

from mesh.placement import HostsPlacement, NativePlacement, Placement
from mesh.runtime import hosts
from mesh.runtime.hosts import Network
from mesh.runtime.paths import StateDir, cache_dir
from mesh.runtime.provision import IPTABLES
from mesh.topology import Hosts, Topology

NATIVE = "native"
HOSTS = "hosts"
PLACEMENTS = (NATIVE, HOSTS)


def _record(state: StateDir) -> Path:
    return state.root / "placement.json"


def place_on(state: StateDir, network: Network) -> None:
    """The hosts made (what exists is kept) and the mesh of `state` placed on them."""
    IPTABLES.install(cache_dir())
    hosts.create(network)
    remember(state, network)


def remember(state: StateDir, network: Network) -> None:
    """The mesh of `state` runs across `network`'s hosts."""
    record = {
        "placement": HOSTS,
        "prefix": network.prefix,
        "links": network.links,
        "subnet": str(network.hosts.subnet),
    }
    _record(state).write_text(json.dumps(record))


def forget(state: StateDir) -> None:
    """The mesh of `state` runs on this host."""
    _record(state).unlink(missing_ok=True)


def chosen(state: StateDir) -> str:
    return HOSTS if _record(state).exists() else NATIVE


def network(state: StateDir, topology: Topology) -> Network | None:
    """The hosts the mesh of `state` runs across, None if it runs on this host."""
    try:
        record = json.loads(_record(state).read_text())
    except FileNotFoundError:
        return None
    hosts = on_subnet(topology, IPv4Network(record["subnet"])).hosts
    return Network(hosts, record["prefix"], record["links"])


def placement(topology: Topology, network: Network | None) -> Placement:
    """On this host (no network), or spread over the network's hosts."""
    if network is None:
        return NativePlacement.of(topology)
    return HostsPlacement.of(replace(topology, hosts=network.hosts))


def on_subnet(topology: Topology, subnet: IPv4Network) -> Topology:
    """The topology with its hosts on `subnet` (the same names, in the same order)."""
    apps = tuple(host.name for host in topology.hosts.apps)
    return replace(topology, hosts=Hosts.on(subnet, apps, topology.hosts.balancer.name))
