"""`mesh`: install, run and break the native shopmesh runtime."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import httpx

from mesh.bench import scenarios
from mesh.bench.accounts import AccountsError
from mesh.bench.tools import CEILING_WORKERS, ToolError
from mesh.components.consul_acl import OPERATOR
from mesh.compose import files as compose_files
from mesh.placement import CONSUL, Placement, consul_agent_on
from mesh.runtime import (
    demo,
    faults,
    hosting,
    hosts,
    jaeger,
    kafka,
    kafka_tools,
    netcli,
    process,
    protos,
    sizes,
    tls,
    trace,
    users,
)
from mesh.runtime.consul_acl import token_file
from mesh.runtime.hosts import NetError, Network
from mesh.runtime.paths import REPO_ROOT, StateDir, cache_dir
from mesh.runtime.process import ProcessFailed
from mesh.runtime.provision import ProvisionError, install_all
from mesh.runtime.supervisor import AlreadyRunning, Mesh, MeshError
from mesh.topology import Topology, TopologyError, load

SCREENSHOTS_DIR = REPO_ROOT / "docs" / "screenshots"


def _mesh() -> Mesh:
    return Mesh.create(sizes.topology_for(StateDir.default()))


def _placed() -> tuple[Topology, Placement, Network | None]:
    """The topology and placement of the default state dir's mesh, and its hosts if any."""
    state = StateDir.default()
    topology = sizes.topology_for(state)
    network = hosting.network(state, topology)
    if network is not None:
        topology = replace(topology, hosts=network.hosts)
    return topology, hosting.placement(topology, network), network


def _consul_agent(network: Network | None, placement: Placement) -> tuple[str, str | None]:
    """The Consul agent the CLI asks, and the namespace of its host (None: this one): the
    first host's in the hosts placement, where each agent answers its own host only."""
    if network is None:
        return CONSUL, None
    host = network.hosts.apps[0].name
    return consul_agent_on(host), network.namespace(host)


def cmd_install(args: argparse.Namespace) -> int:
    if protos.ensure_generated():
        print(f"generated gRPC stubs in {protos.STUBS_DIR} from {protos.PROTO_ROOT}")
    for name, binaries in install_all(kube=args.kube).items():
        for binary, path in binaries.items():
            print(f"{name:<10} {binary:<10} {path}")
    print(f"cache: {cache_dir()}")
    return 0


def _next_steps(mesh: Mesh) -> str:
    t, p = mesh.topology, mesh.placement
    base = f"http://{p.public()}:{t.edge.http_port}"
    consul_ui = f"{t.consul_http_addr}/ui   (its CA: mesh ca --consul)"
    if mesh.network:
        consul_ui = "on each host's own loopback only (docs/hosts.md)"
    return f"""
edge gateway:  {base}
consul UI:     {consul_ui}
jaeger UI:     {jaeger.query_url(t, p)}
state dir:     {mesh.state.root}

try:
  curl -s -X POST {base}/orders -H 'Content-Type: application/json' \\
       -d '{{"userId": "alice", "items": [{{"productId": "book", "quantity": 2}}]}}'
  mesh status          # every component, its pid, ports and health
  mesh trace ORDER_ID  # the order's trace (edge, sidecars, services, Kafka) as a tree
  mesh kill orders     # SIGKILL a service, then: mesh start orders
  mesh kill kafka-2    # SIGKILL a Kafka broker (the cluster serves on), then: mesh start kafka-2
  mesh down            # stop everything
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM stop everything cleanly, also while starting (and also when the shell
    # that started us ignores SIGINT, as background jobs do).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    state = StateDir.default()
    before = sizes.chosen(state)
    wanted = sizes.SMALL if args.small else sizes.FULL
    if wanted != before and any(state.data.glob("consul-server-*")):
        # Consul's Raft and Patroni's cluster remember their members: one size's data does not
        # start the other.
        raise MeshError(
            f"{state.root} holds the data of the {before} mesh; start the {wanted} one in a state "
            f"dir of its own: SHOPMESH_STATE_DIR={state.root}-{wanted} mesh up"
            + (" --small" if args.small else "")
        )
    placement = args.placement or hosting.chosen(state)
    if placement != hosting.chosen(state) and any(state.data.glob("consul-server-*")):
        # The data names the members' addresses: one placement's does not start the other.
        raise MeshError(
            f"{state.root} holds the data of a mesh of the {hosting.chosen(state)} placement; "
            f"start the {placement} one in a state dir of its own: "
            f"SHOPMESH_STATE_DIR={state.root}-{placement} mesh up --placement {placement}"
        )
    sizes.choose(state, wanted)
    if placement == hosting.HOSTS:
        topology = sizes.topology_for(state)
        hosting.place_on(state, hosting.network(state, topology) or Network.of(topology))
    else:
        hosting.forget(state)
    mesh = _mesh()
    where = f" across {', '.join(mesh.network.names)}" if mesh.network else ""
    print(f"starting the {sizes.chosen(state)} mesh{where} (state in {mesh.state.root})")
    try:
        mesh.up()
    except AlreadyRunning:
        sizes.choose(state, before)
        raise
    except (KeyboardInterrupt, ProcessFailed, MeshError) as exc:
        print(f"{str(exc) or 'interrupted'}\nstopping what was started", file=sys.stderr)
        mesh.down()
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    print(_next_steps(mesh))
    if args.detach:
        return 0
    print("running in the foreground; Ctrl-C stops the mesh (use `mesh up -d` to detach)")
    reported: set[str] = set()
    try:
        while True:
            for name in mesh.names():
                alive = process.running(mesh.state, name) is not None
                if not alive and name not in reported:
                    print(
                        f"{time.strftime('%H:%M:%S')} {name} is not running "
                        f"(`mesh logs {name}`; the watchdog restarts it unless it was stopped)"
                    )
                    reported.add(name)
                elif alive:
                    reported.discard(name)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping the mesh")
        mesh.down()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    mesh = _mesh()
    mesh.down()
    print("mesh is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    mesh = _mesh()
    rows = list(mesh.status())
    restarts = mesh.restarts()

    def show(shown: list[tuple[str, str, str, str]]) -> None:
        for name, pid, ports, health in shown:
            print(f"{name:<24} {pid:<8} {ports:<22} {restarts.get(name, '-')!s:<9} {health}")

    print(f"{'COMPONENT':<24} {'PID':<8} {'PORTS':<22} {'RESTARTS':<9} HEALTH")
    if mesh.network is None:
        show(rows)
    else:
        names = set(mesh.names())
        where = {row[0]: mesh.namespace_of(row[0]) for row in rows if row[0] in names}
        for host in mesh.network.hosts.all:
            namespace = mesh.network.namespace(host.name)
            print(f"-- {host.name} ({host.address}, network namespace {namespace})")
            show([row for row in rows if where.get(row[0]) == namespace])
        print("-- clusters")
        show([row for row in rows if row[0] not in names])
    healthy = all(health == "healthy" or health.startswith("ok,") for *_, health in rows)
    return 0 if healthy else 3


def cmd_logs(args: argparse.Namespace) -> int:
    mesh = _mesh()
    for name in mesh.resolve(args.name):
        path = process.log_path(mesh.state, name)
        if not path.exists():
            raise MeshError(f"no log for {name} yet ({path})")
        if args.follow:
            os.execvp("tail", ["tail", "-n", "50", "-F", str(path)])
        sys.stdout.write(path.read_text(errors="replace"))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    killed = _mesh().kill(args.name, hold=args.hold)
    if not killed:
        print(f"{args.name} was not running")
        return 0
    comes_back = "kept down until `mesh start`" if args.hold else "the watchdog restarts it"
    print(f"SIGKILL sent to {', '.join(killed)}; {comes_back}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    stopped = _mesh().stop(args.name)
    print(f"stopped {', '.join(stopped)}" if stopped else f"{args.name} was not running")
    print(f"it stays down until `mesh start {args.name}`")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    _mesh().start(args.name)
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    """Set or clear a service's fault flags in Consul KV; services apply them within a second."""
    topology, placement, network = _placed()
    agent, namespace = _consul_agent(network, placement)
    addr = placement.consul_http_addr(topology, agent)
    state = StateDir.default()

    def change() -> str:
        if args.clear:
            faults.clear_fault(topology, state, args.service, addr)
            return f"cleared the faults of {args.service}"
        return faults.set_fault(
            topology,
            state,
            args.service,
            error_rate=args.error_rate,
            latency_ms=args.latency_ms,
            methods=args.method,
            consul_addr=addr,
        )

    try:
        print(hosts.call_in(namespace, change) if namespace else change())
    except faults.FaultError as exc:
        raise MeshError(str(exc)) from None
    except httpx.HTTPError as exc:
        raise MeshError(f"consul at {addr} did not take it: {exc}") from None
    return 0


def cmd_ca(args: argparse.Namespace) -> int:
    """The local CA that signed the edge's certificate: `curl --cacert "$(mesh ca)" ...`; with
    --consul, Consul's, which signed its agents': `curl --cacert "$(mesh ca --consul)" ...`."""
    state = StateDir.default()
    path = tls.consul_ca(state) if args.consul else tls.edge_certs(state).ca_cert
    if not path.exists():
        raise MeshError(f"no CA yet at {path}: it is created by the first `mesh up`")
    print(path)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """An access token for a demo user (password grant through the edge)."""
    try:
        topology, placement, _ = _placed()
        print(demo.token(topology, StateDir.default(), args.user, placement))
    except (KeyError, FileNotFoundError) as exc:
        raise MeshError(f"{exc}; is the mesh up (`mesh up`)?") from None
    except httpx.HTTPError as exc:
        raise MeshError(f"the token endpoint did not answer: {exc}") from None
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    """A demo user's password (generated at first start into the state dir's secrets)."""
    try:
        print(demo.password(StateDir.default(), args.user))
    except (KeyError, FileNotFoundError) as exc:
        raise MeshError(f"{exc}; is the mesh up (`mesh up`)?") from None
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    """Users with generated passwords, made by the admin through the edge: their ids on stdout."""
    state = StateDir.default()
    try:
        topology, placement, _ = _placed()
        created = users.create_users(
            topology, state, args.count, prefix=args.prefix, placement=placement
        )
    except users.UsersError as exc:
        raise MeshError(str(exc)) from None
    print("\n".join(created))
    passwords = demo.created_users_file(state)
    print(f"created {len(created)} users; passwords in {passwords}", file=sys.stderr)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """One trace as a tree of spans: by trace id, or the trace that created an order. Spans
    reach Jaeger seconds after the request, so it waits for them (up to --wait seconds)."""
    topology, placement, _ = _placed()
    url = jaeger.query_url(topology, placement)
    query = trace.JaegerQuery(url)
    try:
        found = trace.wait_for(
            query, args.id, wait_s=args.wait, say=lambda msg: print(msg, file=sys.stderr)
        )
    except trace.TraceNotFound as exc:
        raise MeshError(str(exc)) from None
    except httpx.HTTPError as exc:
        raise MeshError(f"Jaeger's query API at {url} did not answer: {exc}") from None
    finally:
        query.close()
    print("\n".join(trace.lines(found)))
    if (warning := trace.incomplete(found)) is not None:
        print(warning, file=sys.stderr)
    return 0


def cmd_screenshots(args: argparse.Namespace) -> int:
    """The web front end's main pages of the running mesh, as PNGs for the README's tour:
    Debian's Chromium driven by Playwright (`mesh install`; Playwright is a dev dependency)."""
    from mesh.runtime import browser

    topology = sizes.topology_for(StateDir.default())
    edge_url = f"https://{topology.bind_host}:{topology.edge.https_port}"
    for path in browser.take_screenshots(StateDir.default(), edge_url, SCREENSHOTS_DIR):
        print(path.relative_to(REPO_ROOT))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    """compose.yaml (and Prometheus's compose config) from the topology."""
    topology = load()
    if args.check:
        stale = compose_files.stale(topology)
        for path in stale:
            print(f"{path} is out of date: run `mesh compose`", file=sys.stderr)
        return 1 if stale else 0
    for path in compose_files.write(topology):
        print(f"wrote {path}")
    return 0


def cmd_helm(args: argparse.Namespace) -> int:
    """deploy/helm/shopmesh from the topology."""
    # Imported here: the chart's generator reads the intentions with python-hcl2, a dev
    # dependency, and no other command needs it (the service image installs no dev extras).
    from mesh.helm import chart as helm_chart

    topology = load()
    if args.check:
        stale = helm_chart.stale(topology)
        for path in stale:
            print(f"{path} is out of date: run `mesh helm`", file=sys.stderr)
        return 1 if stale else 0
    for path in helm_chart.write(topology):
        print(f"wrote {path}")
    return 0


def cmd_consul(args: argparse.Namespace) -> int:
    """The pinned consul binary, pointed at the mesh's agent (HTTPS, checked with the Consul
    CA), with the operator token."""
    topology, placement, network = _placed()
    agent, namespace = _consul_agent(network, placement)
    state = StateDir.default()
    consul_bin = install_all()["consul"]["consul"]
    os.environ["CONSUL_HTTP_ADDR"] = placement.consul_http_addr(topology, agent)
    os.environ["CONSUL_CACERT"] = str(tls.consul_ca(state))
    os.environ["CONSUL_HTTP_TOKEN_FILE"] = str(token_file(state, OPERATOR))
    command = [str(consul_bin), *args.args]
    if namespace:  # the agent answers on its host's loopback only
        command = hosts.in_namespace(namespace, command)
    os.execvp(command[0], command)


def cmd_bench(args: argparse.Namespace) -> int:
    """One load run against the live mesh; its figures as one JSON line on stdout."""
    request = scenarios.Run(
        args.scenario, args.rate, args.duration, args.workers, args.users, args.tool
    )
    try:
        result = scenarios.run(load(), StateDir.default(), request)
    except (scenarios.BenchError, AccountsError, ToolError) as exc:
        raise MeshError(str(exc)) from None
    print(json.dumps(result))
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    """One of Kafka's own tools, from the cache, against the mesh's brokers."""
    config = kafka.admin_properties(StateDir.default())
    topology, placement, _ = _placed()
    bootstrap = placement.kafka_bootstrap(topology)
    command = kafka_tools.argv(bootstrap, install_all()["kafka"], args.tool, args.args, config)
    os.execv(command[0], command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="provision the pinned components into the cache")
    install.add_argument(
        "--kube",
        action="store_true",
        help="also the Kubernetes control plane of the chart's API-server tests (make test-kube;"
        " first time: about 50 minutes on 2 cores)",
    )
    install.set_defaults(func=cmd_install)
    up = sub.add_parser("up", help="install if needed, start everything, wait until healthy")
    up.add_argument("-d", "--detach", action="store_true", help="return once the mesh is up")
    up.add_argument(
        "--small",
        action="store_true",
        help="one of each instance, edge, Consul server and Postgres node, for small machines",
    )
    up.add_argument(
        "--placement",
        choices=hosting.PLACEMENTS,
        help="native: every process on this host (the default); hosts: across network-namespace "
        "hosts (root; docs/hosts.md). Remembered in the state dir",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="component, pid, ports, health").set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="print a component's log")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)
    kill = sub.add_parser(
        "kill", help="SIGKILL a component or every instance of a service (a crash: it restarts)"
    )
    kill.add_argument("name")
    kill.add_argument("--hold", action="store_true", help="keep it down until `mesh start`")
    kill.set_defaults(func=cmd_kill)
    stop = sub.add_parser("stop", help="stop a component gracefully; it stays down until start")
    stop.add_argument("name")
    stop.set_defaults(func=cmd_stop)
    start = sub.add_parser("start", help="start a stopped component and wait until it is ready")
    start.add_argument("name")
    start.set_defaults(func=cmd_start)
    fault = sub.add_parser("fault", help="inject errors or latency into a service (Consul KV)")
    fault.add_argument("service")
    fault.add_argument("--error-rate", type=float, default=0.0, help="0..1, share of calls failed")
    fault.add_argument("--latency-ms", type=int, default=0, help="added to every matching call")
    fault.add_argument("--method", action="append", help="only this RPC or path prefix (repeat)")
    fault.add_argument("--clear", action="store_true", help="remove the service's faults")
    fault.set_defaults(func=cmd_fault)
    ca = sub.add_parser("ca", help="print the path of the edge's local CA certificate")
    ca.add_argument(
        "--consul", action="store_true", help="Consul's CA instead (its agents' HTTPS API)"
    )
    ca.set_defaults(func=cmd_ca)
    token = sub.add_parser("token", help="print an access token for a demo or created user")
    token.add_argument("user", help="alice, bob, admin, or an id `mesh users create` printed")
    token.set_defaults(func=cmd_token)
    users_cmd = sub.add_parser("users", help="users for tests and benchmarks")
    users_sub = users_cmd.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser(
        "create", help="create COUNT users with passwords, as the admin through the edge"
    )
    create.add_argument("count", type=int)
    create.add_argument("--prefix", default="user", help="their names and emails start with it")
    create.set_defaults(func=cmd_users_create)
    password = sub.add_parser("password", help="print a demo user's generated password")
    password.add_argument("user", help="alice, bob or admin")
    password.set_defaults(func=cmd_password)
    trace_cmd = sub.add_parser("trace", help="print a trace from Jaeger as a tree of spans")
    trace_cmd.add_argument("id", help="a trace id (32 hex digits) or an order id")
    trace_cmd.add_argument(
        "--wait",
        type=float,
        default=trace.WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the trace to reach Jaeger (default {trace.WAIT_S:g})",
    )
    trace_cmd.set_defaults(func=cmd_trace)
    sub.add_parser(
        "screenshots", help="save the web pages of the running mesh into docs/screenshots"
    ).set_defaults(func=cmd_screenshots)
    compose_cmd = sub.add_parser("compose", help="write compose.yaml from the topology")
    compose_cmd.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are out of date"
    )
    compose_cmd.set_defaults(func=cmd_compose)
    helm_cmd = sub.add_parser("helm", help="write the Helm chart deploy/helm/shopmesh")
    helm_cmd.add_argument(
        "--check", action="store_true", help="exit 1 if the committed chart is out of date"
    )
    helm_cmd.set_defaults(func=cmd_helm)
    consul = sub.add_parser("consul", help="run the pinned consul CLI against the mesh's agent")
    consul.add_argument("args", nargs=argparse.REMAINDER)
    consul.set_defaults(func=cmd_consul)
    tools = sorted(kafka_tools.TOOLS)
    kafka = sub.add_parser(
        "kafka",
        help="run one of Kafka's own tools (topics, consumer-groups, ...) against the brokers",
        description="Kafka's command-line tools from the cache; TOOL is the script's name "
        "without kafka- and .sh. --bootstrap-server is the topology's brokers unless given.",
    )
    kafka.add_argument("tool", choices=tools, metavar="TOOL", help=", ".join(tools))
    kafka.add_argument("args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    kafka.set_defaults(func=cmd_kafka)
    bench = sub.add_parser(
        "bench",
        help="one load run (vegeta, h3load, ghz) against the mesh; one JSON line of figures",
        description="Figures: achieved rate, p50/p90/p99/max latency, error ratio, status "
        "counts. Through the edge the load is spread over the bench users (made on first use) "
        "and several client addresses, with every limit on. `make bench` runs them all.",
    )
    bench.add_argument(
        "scenario",
        choices=sorted(scenarios.SCENARIOS),
        metavar="SCENARIO",
        help=", ".join(scenarios.SCENARIOS),
    )
    bench.add_argument(
        "--rate",
        type=int,
        required=True,
        help="requests per second (open model); 0: the closed-loop ceiling",
    )
    bench.add_argument("--duration", type=float, default=20.0, metavar="SECONDS")
    bench.add_argument(
        "--workers",
        type=int,
        default=CEILING_WORKERS,
        help="requests in flight for --rate 0",
    )
    bench.add_argument(
        "--users",
        type=int,
        default=scenarios.DEFAULT_USERS,
        help="bench users the edge's per-user limit is spread over",
    )
    bench.add_argument(
        "--tool",
        choices=("vegeta", "wrk"),
        default="vegeta",
        help="wrk: closed loop, direct and sidecars only",
    )
    bench.set_defaults(func=cmd_bench)
    netcli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except (MeshError, ProvisionError, ProcessFailed, TopologyError, NetError) as exc:
        print(f"mesh {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
