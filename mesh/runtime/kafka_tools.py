"""`mesh kafka TOOL ARGS...`: Kafka's own command-line tools, run from the jars `mesh install`
put in the cache (org.apache.kafka:kafka-tools with the broker's jars), against the mesh's
brokers.

TOOL is the script's name in Kafka's distribution without `kafka-` and `.sh`: `kafka-topics.sh`
is `topics`. Each runs its main class as kafka-run-class.sh would, with a log4j config that
keeps the tool's output clean, and gets `--bootstrap-server` with the topology's brokers unless
the arguments name servers themselves, and the admin principal's client settings (the state
dir's owner-only `config/kafka/admin-client.properties`, written by `mesh up`) through the
tool's own option for them unless the arguments give one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mesh.runtime.kafka import java_argv
from mesh.runtime.paths import REPO_ROOT

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


COMMAND_CONFIG = "--command-config"


@dataclass(frozen=True)
class Tool:
    main: str
    bootstrap: Bootstrap = Bootstrap.OPTION
    heap: str = "256m"  # kafka-run-class.sh's default for the tools
    # The option that takes a client properties file (None: the tool connects to nothing).
    client_config: str | None = COMMAND_CONFIG


# The classes Kafka 3.9's bin/ scripts run; each is checked against the provisioned jars by
# tests/unit/test_kafka_tools.py.
TOOLS: dict[str, Tool] = {
    "topics": Tool("org.apache.kafka.tools.TopicCommand"),
    "consumer-groups": Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    "console-consumer": Tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", client_config="--consumer.config"
    ),
    "console-producer": Tool("kafka.tools.ConsoleProducer", client_config="--producer.config"),
    "producer-perf-test": Tool(
        "org.apache.kafka.tools.ProducerPerformance",
        Bootstrap.PRODUCER_PROPS,
        heap="512m",
        client_config="--producer.config",
    ),
    "consumer-perf-test": Tool(
        "org.apache.kafka.tools.ConsumerPerformance", heap="512m", client_config="--consumer.config"
    ),
    "get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell"),
    "log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand"),
    "metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand"),
    "configs": Tool("kafka.admin.ConfigCommand"),
    "reassign-partitions": Tool("org.apache.kafka.tools.reassign.ReassignPartitionsCommand"),
    "leader-election": Tool(
        "org.apache.kafka.tools.LeaderElectionCommand", client_config="--admin.config"
    ),
    "delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand"),
    "transactions": Tool("org.apache.kafka.tools.TransactionsCommand"),
    "features": Tool("org.apache.kafka.tools.FeatureCommand"),
    "broker-api-versions": Tool("kafka.admin.BrokerApiVersionsCommand"),
    "dump-log": Tool("kafka.tools.DumpLogSegments", Bootstrap.NONE, client_config=None),
}


def names_servers(args: Sequence[str]) -> bool:
    return any(
        arg.split("=", 1)[0] in BOOTSTRAP_OPTIONS or arg.startswith(BOOTSTRAP_PROPERTY)
        for arg in args
    )


def with_client_config(tool: Tool, args: Sequence[str], client_config: Path) -> list[str]:
    """The arguments with the client settings' option first, unless they have it already."""
    option = tool.client_config
    if option is None or any(arg.split("=", 1)[0] == option for arg in args):
        return list(args)
    return [option, str(client_config), *args]


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
    bootstrap: str,
    binaries: dict[str, Path],
    name: str,
    args: Sequence[str],
    client_config: Path,
) -> list[str]:
    """The java command line of tool `name` with `args` (binaries: the kafka component's),
    signed in with the `client_config` properties file, against the brokers `bootstrap`."""
    tool = TOOLS[name]
    command = java_argv(binaries, tool.heap, TOOLS_LOG4J, tool.main)
    signed_in = with_client_config(tool, args, client_config)
    return [*command, *tool_args(tool, signed_in, bootstrap)]
