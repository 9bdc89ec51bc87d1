"""`mesh kafka TOOL ARGS...`: Kafka's own command-line tools, run from the jars `mesh install`
put in the cache (org.apache.kafka:kafka-tools with the broker's jars), against the mesh's
brokers.

TOOL is the script's name in Kafka's distribution without `kafka-` and `.sh`: `kafka-topics.sh`
is `topics`. Each runs its main class as kafka-run-class.sh would, with a log4j config that
keeps the tool's output clean, and gets `--bootstrap-server` with the topology's brokers unless
the arguments name servers themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mesh.runtime.kafka import java_argv
from mesh.runtime.paths import REPO_ROOT
from mesh.topology import Topology

TOOLS_LOG4J = REPO_ROOT / "mesh" / "kafka" / "tools-log4j.properties"
# Arguments that name the servers already.
BOOTSTRAP_OPTIONS = ("--bootstrap-server", "--bootstrap-controller")
BOOTSTRAP_PROPERTY = "bootstrap.servers="


class Bootstrap(Enum):
    """How a tool is told the brokers."""

    OPTION = "--bootstrap-server"
    # ProducerPerformance (3.9) has no --bootstrap-server: bootstrap.servers in --producer-props.
    PRODUCER_PROPS = "--producer-props"
    # Works on files (dump-log).
    NONE = None


@dataclass(frozen=True)
class Tool:
    main: str
    bootstrap: Bootstrap = Bootstrap.OPTION
    heap: str = "256m"  # kafka-run-class.sh's default for the tools


# The classes Kafka 3.9's bin/ scripts run; each is checked against the provisioned jars by
# tests/unit/test_kafka_tools.py.
TOOLS: dict[str, Tool] = {
    "topics": Tool("org.apache.kafka.tools.TopicCommand"),
    "consumer-groups": Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    "console-consumer": Tool("org.apache.kafka.tools.consumer.ConsoleConsumer"),
    "console-producer": Tool("kafka.tools.ConsoleProducer"),
    "producer-perf-test": Tool(
        "org.apache.kafka.tools.ProducerPerformance", Bootstrap.PRODUCER_PROPS, heap="512m"
    ),
    "consumer-perf-test": Tool("org.apache.kafka.tools.ConsumerPerformance", heap="512m"),
    "get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell"),
    "log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand"),
    "metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand"),
    "configs": Tool("kafka.admin.ConfigCommand"),
    "reassign-partitions": Tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand"),
    "leader-election": Tool("org.apache.kafka.tools.LeaderElectionCommand"),
    "delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand"),
    "transactions": Tool("org.apache.kafka.tools.TransactionsCommand"),
    "features": Tool("org.apache.kafka.tools.FeatureCommand"),
    "broker-api-versions": Tool("kafka.admin.BrokerApiVersionsCommand"),
    "dump-log": Tool("kafka.tools.DumpLogSegments", Bootstrap.NONE),
}


def names_servers(args: Sequence[str]) -> bool:
    return any(
        arg.split("=", 1)[0] in BOOTSTRAP_OPTIONS or arg.startswith(BOOTSTRAP_PROPERTY)
        for arg in args
    )


def tool_args(tool: Tool, args: Sequence[str], bootstrap: str) -> list[str]:
    """The tool's arguments, with the brokers added where the tool takes them. The option goes
    first: tools with subcommands (metadata-quorum, transactions) take options before them."""
    if tool.bootstrap is Bootstrap.NONE or names_servers(args):
        return list(args)
    if tool.bootstrap is Bootstrap.OPTION:
        return [Bootstrap.OPTION.value, bootstrap, *args]
    # --producer-props takes every value up to the next option: join the user's, if any.
    prop = f"{BOOTSTRAP_PROPERTY}{bootstrap}"
    flag = Bootstrap.PRODUCER_PROPS.value
    if flag in args:
        at = args.index(flag) + 1
        return [*args[:at], prop, *args[at:]]
    return [*args, flag, prop]


def argv(
    topology: Topology, binaries: dict[str, Path], name: str, args: Sequence[str]
) -> list[str]:
    """The java command line of tool `name` with `args` (binaries: the kafka component's)."""
    tool = TOOLS[name]
    command = java_argv(binaries, tool.heap, TOOLS_LOG4J, tool.main)
    return [*command, *tool_args(tool, args, topology.kafka_bootstrap())]
