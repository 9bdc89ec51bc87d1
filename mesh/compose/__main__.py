"""`python -m mesh.compose init | consul-acl | bootstrap | kafka-acls | worker-ready GROUP`, in the
containers."""

from __future__ import annotations

import argparse
import sys

from mesh.compose.steps import bootstrap, consul_acls, init, kafka_acls, worker_ready
from mesh.topology import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.compose")
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("init", help="generate the secrets into the state volume")
    sub.add_parser("consul-acl", help="Consul's ACL policies and tokens")
    sub.add_parser("bootstrap", help="databases, the edge's config and registration")
    sub.add_parser("kafka-acls", help="the Kafka ACLs of mesh/kafka/topics.yaml's clients")
    ready = sub.add_parser("worker-ready", help="exit 0 once this worker is in its group")
    ready.add_argument("group")
    args = parser.parse_args(argv)
    topology = load()
    if args.step == "init":
        init(topology)
    elif args.step == "consul-acl":
        consul_acls(topology)
    elif args.step == "bootstrap":
        bootstrap(topology)
    elif args.step == "kafka-acls":
        kafka_acls(topology)
    else:
        return worker_ready(args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
