"""The architecture diagram, generated from mesh/topology.yaml and mesh/kafka/topics.yaml.

    python docs/diagrams/architecture.py    # writes architecture.dot, renders architecture.svg

Names and ports come from the topology, so the picture cannot drift from the runtime
(tests/unit/test_docs.py checks the committed .dot against this generator). Rendering needs
Graphviz's `dot` (a docs tool, not a runtime dependency: `apt-get install graphviz`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from mesh.components.kafka import DLQ_SUFFIX, load_topics  # noqa: E402
from mesh.topology import TOPOLOGY_FILE, Service, Topology, load  # noqa: E402

DOT_FILE = HERE / "architecture.dot"
SVG_FILE = HERE / "architecture.svg"

# Who writes each topic (through its outbox) and which consumer groups read it
# (services/*/app.py, services/payments/worker.py): a service's group is named after it, a
# worker's after its topology entry unless the entry is (worker, group).
PRODUCERS = {
    "user-events": ["users"],
    "order-events": ["orders"],
    "payment-tasks": ["orders"],
    "payment-events": ["payments", "payments-worker"],
}
CONSUMERS = {
    "user-events": ["auth", "orders", "payments", "notifications"],
    "order-events": ["notifications", ("payments-worker", "payment-cancellations")],
    "payment-tasks": ["payments-worker"],
    "payment-events": ["orders", "notifications"],
}
# What each upstream call is for (the topology says who may call whom); the other upstreams
# are every service's JWKS fetch from auth, listed in the services' boxes.
CALLS = {
    ("orders", "users"): "GetUser",
    ("orders", "payments"): "ProcessPayment",
    ("auth", "users"): "GetUser (token exchange)",
}


def q(text: str) -> str:
    """A quoted DOT id; `\\n` in labels stays a DOT line break."""
    return '"' + text.replace('"', '\\"') + '"'


def attrs(**kw: str) -> str:
    return "[" + ", ".join(f"{k}={q(v)}" for k, v in kw.items()) + "]"


def jaeger_label() -> str:
    """Jaeger's ports as the topology's `jaeger.ports` gives them."""
    raw = yaml.safe_load(TOPOLOGY_FILE.read_text()).get("jaeger") or {}
    ports = raw.get("ports") or {}
    lines = [f"{name.replace('_', ' ')} :{port}" for name, port in ports.items()]
    return "\\n".join(["Jaeger v2", *lines])


def upstream_list(service: Service) -> str:
    """The loopback listeners its sidecar opens for it: `upstream :port`."""
    return "\\n".join(f"→ {u.service} :{u.local_bind_port}" for u in service.upstreams)


def service_nodes(t: Topology) -> list[str]:
    out = []
    for service in t.services:
        for inst in service.instances:
            out += [
                f"    subgraph {q('cluster_' + inst.id)} {{",
                f"      graph {attrs(label=inst.id, style='rounded,dashed', color='gray50')};",
                f"      {q(inst.id)} "
                + attrs(
                    label=f"{service.name}\\n{service.protocol.upper()} :{inst.port}"
                    f"\\nmetrics :{inst.metrics_port}\\n{upstream_list(service)}",
                    shape="box",
                    style="rounded,filled",
                    fillcolor="lightyellow",
                )
                + ";",
                f"      {q(inst.id + '-sidecar')} "
                + attrs(
                    label=f"sidecar :{inst.sidecar.port}\\nmetrics :{inst.sidecar.metrics_port}",
                    shape="box",
                    style="filled",
                    fillcolor="lightblue",
                )
                + ";",
                f"      {q(inst.id + '-sidecar')} -> {q(inst.id)} "
                + attrs(label="loopback", fontsize="9")
                + ";",
                "    }",
            ]
    return out


def mesh_edges(t: Topology) -> list[str]:
    out = []
    for edge in t.edge.instances:
        for up in edge.upstreams:
            target = t.service(up.service)
            proto = "gRPC (h2)" if target.protocol == "grpc" else "HTTP"
            for inst in target.instances:
                out.append(
                    f"  {q(edge.id + '-sidecar')} -> {q(inst.id + '-sidecar')} "
                    + attrs(
                        label=f"{up.service} :{up.local_bind_port}\\nmTLS {proto}", color="blue"
                    )
                    + ";"
                )
    for service in t.services:
        for caller in service.instances:
            for up in service.upstreams:
                target = t.service(up.service)
                call = CALLS.get((service.name, up.service))
                if call is None:
                    continue  # a JWKS fetch: listed in the caller's box, not drawn
                for inst in target.instances:
                    out.append(
                        f"  {q(caller.id)} -> {q(inst.id + '-sidecar')} "
                        + attrs(
                            label=f"{call}\\nvia :{up.local_bind_port}",
                            color="blue",
                            fontsize="9",
                        )
                        + ";"
                    )
    return out


def kafka_nodes(t: Topology) -> list[str]:
    topics = [s for s in load_topics() if not s.name.endswith(DLQ_SUFFIX)]
    dlqs = [s for s in load_topics() if s.name.endswith(DLQ_SUFFIX)]
    spec = topics[0]
    nodes = ", ".join(f"{n.name} :{n.port}" for n in t.kafka.nodes)
    out = [
        "  subgraph cluster_kafka {",
        "    graph "
        + attrs(
            label=f"Kafka (KRaft): {nodes}\\nRF {spec.replication_factor}, "
            f"min ISR {spec.min_insync_replicas}, acks=all",
            style="rounded,filled",
            fillcolor="mistyrose",
            color="firebrick",
        )
        + ";",
    ]
    for topic in topics:
        out.append(
            f"    {q(topic.name)} "
            + attrs(label=f"{topic.name}\\n{topic.partitions} partitions", shape="cds")
            + ";"
        )
    out.append(
        f"    {q('dlq')} "
        + attrs(
            label="\\n".join(d.name for d in dlqs) + f"\\n{dlqs[0].partitions} partition each",
            shape="note",
            style="dashed",
        )
        + ";"
    )
    out.append("  }")
    return out


def kafka_edges(t: Topology) -> list[str]:
    out = []
    worker_names = {w.name: w for w in t.workers}
    for topic, writers in PRODUCERS.items():
        for writer in writers:
            name = "workers" if writer in worker_names else t.service(writer).instances[0].id
            source = q(name)
            out.append(
                f"  {source} -> {q(topic)} "
                + attrs(label="outbox relay", color="firebrick", fontsize="9")
                + ";"
            )
    for topic, readers in CONSUMERS.items():
        for reader in readers:
            process, group = reader if isinstance(reader, tuple) else (reader, None)
            if process in worker_names:
                target, name = q("workers"), group or worker_names[process].group
            else:
                target, name = q(t.service(process).instances[0].id), group or process
            out.append(
                f"  {q(topic)} -> {target} "
                + attrs(label=f"group {name}", color="firebrick", style="dashed", fontsize="9")
                + ";"
            )
    out.append(
        f"  {q('payment-tasks')} -> {q('dlq')} "
        + attrs(label="after 3 attempts", color="gray40", style="dotted", fontsize="9")
        + ";"
    )
    return out


def edge_nodes(t: Topology) -> list[str]:
    return [
        f"    {q(edge.id)} "
        + attrs(
            label=f"{edge.id}\\nplain :{edge.http_port}\\nTLS h1/h2 :{edge.https_port}/tcp"
            f"\\nHTTP/3 :{t.edge.https_port}/udp (shared)\\nready, metrics :{edge.metrics_port}"
            "\\n─\\njwt_authn → ratelimit (per IP, per user)\\n→ token exchange (cached)"
            "\\n→ grpc_json_transcoder → router",
            shape="box",
            style="filled",
            fillcolor="honeydew",
        )
        + ";"
        for edge in t.edge.instances
    ]


def edge_sidecar_nodes(t: Topology) -> list[str]:
    return [
        f"    {q(edge.id + '-sidecar')} "
        + attrs(
            label=f"{edge.id} sidecar :{edge.sidecar.port}\\nmetrics :{edge.sidecar.metrics_port}",
            shape="box",
            style="filled",
            fillcolor="lightblue",
        )
        + ";"
        for edge in t.edge.instances
    ]


def edge_links(t: Topology) -> list[str]:
    out = []
    for edge in t.edge.instances:
        out += [
            f"  balancer -> {q(edge.id)} "
            + attrs(label=f"PROXY v2 :{edge.http_port}, :{edge.https_port}", color="darkgreen")
            + ";",
            f"  client -> {q(edge.id)} "
            + attrs(label=f"HTTP/3 :{t.edge.https_port}/udp", color="darkgreen", style="dashed")
            + ";",
            f"  {q(edge.id)} -> {q(edge.id + '-sidecar')} "
            + attrs(
                label="loopback upstreams\\n"
                + ", ".join(f"{u.service} :{u.local_bind_port}" for u in edge.upstreams)
            )
            + ";",
        ]
    return out


def render_dot(t: Topology) -> str:
    edge = t.edge
    databases = sorted({s.database for s in t.services if s.database})
    worker_label = "\\n".join(
        f"{w.name}: {', '.join(w.instances)}\\ngroup {w.group}\\nno port, no sidecar"
        for w in t.workers
    )
    ports = t.consul_ports
    lines = [
        "// Generated by docs/diagrams/architecture.py from mesh/topology.yaml and",
        "// mesh/kafka/topics.yaml; do not edit. Render: python docs/diagrams/architecture.py",
        "digraph shopmesh {",
        "  graph " + attrs(rankdir="LR", compound="true", fontname="Helvetica") + ";",
        "  node " + attrs(fontname="Helvetica", fontsize="10") + ";",
        "  edge " + attrs(fontname="Helvetica", fontsize="9") + ";",
        "  graph "
        + attrs(
            label=f"shopmesh on {t.bind_host}: names and ports from mesh/topology.yaml",
            labelloc="t",
        )
        + ";",
        "  client " + attrs(label="client\\n(browser, curl, h2/h3)", shape="oval") + ";",
        "  subgraph cluster_edge {",
        "    graph "
        + attrs(label="edge gateway (Envoy, static config)", style="rounded", color="darkgreen")
        + ";",
        "    balancer "
        + attrs(
            label=f"balancer (HAProxy, TCP)\\nplain :{edge.http_port}"
            f"\\nTLS :{edge.https_port}/tcp\\nstats :{t.balancer_stats_port}",
            shape="box",
            style="filled",
            fillcolor="honeydew",
        )
        + ";",
        *edge_nodes(t),
        "  }",
        "  subgraph cluster_mesh {",
        "    graph "
        + attrs(
            label="Consul Connect mesh: mTLS between sidecars (SPIFFE ids, Consul CA),"
            " intentions default deny",
            style="rounded",
            color="blue",
        )
        + ";",
        *edge_sidecar_nodes(t),
        *service_nodes(t),
        "  }",
        "  workers "
        + attrs(label=worker_label, shape="box3d", style="filled", fillcolor="lightyellow")
        + ";",
        *kafka_nodes(t),
        "  consul "
        + attrs(
            label=f"Consul {t.datacenter}: the host's client agent\\nHTTPS API :{ports.https} "
            f"(registrations, checks, KV)\\nxDS gRPC (TLS) :{ports.grpc}\\n─\\nservers (Raft):\\n"
            + "\\n".join(f"{s.name} :{s.server}" for s in t.consul_servers)
            + "\\ncatalog, Connect CA, intentions, KV",
            shape="cylinder",
            style="filled",
            fillcolor="lavender",
        )
        + ";",
        "  postgres "
        + attrs(
            label=f"Postgres :{t.postgres_port}\\n" + ", ".join(databases),
            shape="cylinder",
            style="filled",
            fillcolor="whitesmoke",
        )
        + ";",
        "  subgraph cluster_obs {",
        "    graph " + attrs(label="observability", style="rounded", color="gray40") + ";",
        "    prometheus "
        + attrs(label=f"Prometheus :{t.prometheus_port}", shape="box", style="rounded")
        + ";",
        f"    jaeger {attrs(label=jaeger_label(), shape='box', style='rounded')};",
        "  }",
        "  client -> balancer "
        + attrs(
            label=f"HTTPS h1/h2 :{edge.https_port}\\nplain :{edge.http_port}"
            f"\\nWebSocket /notifications/ws",
            color="darkgreen",
        )
        + ";",
        *edge_links(t),
        *mesh_edges(t),
        *kafka_edges(t),
        "  workers -> postgres " + attrs(style="dotted", color="gray50", label="payments db") + ";",
        f"  {q(t.services[0].instances[0].id)} -> postgres "
        + attrs(
            style="dotted", color="gray50", ltail="cluster_mesh", label="one database per service"
        )
        + ";",
        f"  consul -> {q(edge.instances[0].id + '-sidecar')} "
        + attrs(
            label="xDS: listeners, endpoints,\\nleaf certificates, intentions",
            style="dashed",
            color="purple",
            lhead="cluster_mesh",
        )
        + ";",
        f"  prometheus -> {q(t.services[0].instances[0].id)} "
        + attrs(label="scrape /metrics", style="dashed", color="gray40", lhead="cluster_mesh")
        + ";",
        f"  {q(t.services[0].instances[0].id)} -> jaeger "
        + attrs(
            label="OTLP spans (services, sidecars)",
            style="dashed",
            color="gray40",
            ltail="cluster_mesh",
        )
        + ";",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    DOT_FILE.write_text(render_dot(load()))
    dot = shutil.which("dot")
    if dot is None:
        sys.exit(f"wrote {DOT_FILE}; install Graphviz (`dot`) to render {SVG_FILE.name}")
    subprocess.run([dot, "-Tsvg", str(DOT_FILE), "-o", str(SVG_FILE)], check=True)
    print(f"wrote {DOT_FILE} and {SVG_FILE}")


if __name__ == "__main__":
    main()
