"""`mesh net`: the hosts (network namespaces) and the faults between them (docs/hosts.md)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from mesh.placement import HostsPlacement
from mesh.runtime import hosting, hosts, netfaults, sizes
from mesh.runtime.hosts import Network
from mesh.runtime.paths import StateDir, cache_dir
from mesh.runtime.provision import IPTABLES
from mesh.topology import Topology, load


def _topology() -> Topology:
    """The default state dir's topology, on the hosts its mesh was placed on if it was."""
    state = StateDir.default()
    topology = sizes.topology_for(state)
    network = hosting.network(state, topology)
    return topology if network is None else replace(topology, hosts=network.hosts)


def _network() -> Network:
    """The hosts of the default state dir's mesh (`mesh up --placement hosts`), else the
    topology's."""
    state = StateDir.default()
    return hosting.network(state, sizes.topology_for(state)) or Network.of(load())


def cmd_up(args: argparse.Namespace) -> int:
    network = _network()
    IPTABLES.install(cache_dir())
    hosts.create(network)
    print(
        f"hosts up on {network.bridge} ({network.hosts.subnet}, this machine is "
        f"{network.hosts.gateway}):"
    )
    return cmd_status(args)


def cmd_down(args: argparse.Namespace) -> int:
    for host, pids in netfaults.down(_network()).items():
        print(f"SIGKILLed what still ran in {host}: {', '.join(map(str, pids))}")
    print("hosts removed: no namespace, link or rule of theirs is left")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    network = _network()
    placement = HostsPlacement.of(_topology())
    on = netfaults.active(network)
    print(f"{'HOST':<10} {'NAMESPACE':<20} {'ADDRESS':<13} {'LINK':<5} {'PROCS':<6} PLACED")
    missing = False
    for state in hosts.states(network):
        link = "up" if state.up and state.address in state.addresses else "down"
        missing |= link == "down"
        placed = ", ".join(placement.components_on(state.name))
        print(
            f"{state.name:<10} {state.namespace:<20} {state.address:<13} {link:<5} "
            f"{state.processes:<6} {placed}"
        )
    print("faults:" + ("" if on else " none"))
    for rule in sorted((rule for rules in on.values() for rule in rules), key=_by_kind):
        print(f"  {rule.comment:<34} {rule.packets} packets so far")
    if delayers := netfaults.delayer_pids(network):
        print(f"delayer: pid {', '.join(map(str, delayers))}")
    return 3 if missing else 0


def _by_kind(rule: netfaults.Seen) -> tuple[int, str]:
    kinds = ("cut", "loss", "delay")
    return kinds.index(rule.comment.split()[0]), rule.comment


def cmd_partition(args: argparse.Namespace) -> int:
    netfaults.partition(_network(), args.host, args.peer, args.one_way)
    others = args.peer or "the other hosts"
    how = (
        f"{args.host} no longer reaches {others}, they still reach it"
        if args.one_way
        else (f"{args.host} and {others} no longer reach each other")
    )
    print(f"{how}; `mesh net heal` ends it")
    return 0


def cmd_loss(args: argparse.Namespace) -> int:
    netfaults.set_loss(_network(), args.percent, args.host)
    links = f"every link of {args.host}" if args.host else "every link between hosts"
    print(f"loss {args.percent:g} % on {links}" if args.percent else "no loss")
    return 0


def cmd_delay(args: argparse.Namespace) -> int:
    netfaults.set_delay(_network(), args.ms, args.jitter, args.host)
    links = f"every link of {args.host}" if args.host else "every link between hosts"
    print(f"delay {args.ms} ± {args.jitter} ms on {links}" if args.ms else "no delay")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    killed = netfaults.kill_host(_network(), args.host)
    print(f"SIGKILL sent to {len(killed)} processes in {args.host}: {killed}")
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    netfaults.heal(_network())
    print("every partition, loss and delay removed (killed processes stay killed)")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    net = sub.add_parser(
        "net",
        help="hosts as network namespaces, and faults between them (docs/hosts.md)",
        description="The topology's hosts as network namespaces on one bridge, and Jepsen's "
        "network faults between them. Needs root.",
    )
    net_sub = net.add_subparsers(dest="net_command", required=True)
    net_sub.add_parser("up", help="create the hosts (idempotent)").set_defaults(func=cmd_up)
    net_sub.add_parser(
        "down", help="remove the hosts: namespaces, links, rules, the delayer"
    ).set_defaults(func=cmd_down)
    net_sub.add_parser(
        "status", help="the hosts, their addresses, what is placed on each, the faults on"
    ).set_defaults(func=cmd_status)
    partition = net_sub.add_parser("partition", help="cut a host off from the others")
    partition.add_argument("host")
    partition.add_argument("--from", dest="peer", metavar="HOST", help="from this host only")
    partition.add_argument(
        "--one-way",
        action="store_true",
        help="only what HOST sends is lost: it reaches nobody, the others still reach it",
    )
    partition.set_defaults(func=cmd_partition)
    loss = net_sub.add_parser("loss", help="drop a share of the packets between hosts (0: none)")
    loss.add_argument("percent", type=float, metavar="PCT")
    loss.add_argument("host", nargs="?", help="only the links to and from this host")
    loss.set_defaults(func=cmd_loss)
    delay = net_sub.add_parser("delay", help="delay each packet between hosts (0: none)")
    delay.add_argument("ms", type=int, metavar="MS")
    delay.add_argument("--jitter", type=int, default=0, metavar="MS", help="± this, uniformly")
    delay.add_argument("host", nargs="?", help="only the links to and from this host")
    delay.set_defaults(func=cmd_delay)
    kill = net_sub.add_parser("kill", help="SIGKILL every process in a host")
    kill.add_argument("host")
    kill.set_defaults(func=cmd_kill)
    net_sub.add_parser("heal", help="remove every partition, loss and delay").set_defaults(
        func=cmd_heal
    )
