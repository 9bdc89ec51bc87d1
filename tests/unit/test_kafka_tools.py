"""`mesh kafka TOOL ARGS...`: the java command lines of Kafka's tools (no JVM is started)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mesh.runtime import cli, kafka_tools
from mesh.runtime.kafka_tools import TOOLS, TOOLS_LOG4J
from mesh.runtime.paths import cache_dir
from mesh.runtime.provision import KAFKA
from mesh.topology import load

BINARIES = {"java": Path("/usr/bin/java"), "libs": Path("/cache/kafka/libs")}
BOOTSTRAP = load().kafka_bootstrap()
CONFIG = Path("/state/config/kafka/admin-client.properties")
SIGNED_IN = ["--command-config", str(CONFIG)]


def tool_args(name: str, *args: str) -> list[str]:
    """What follows the main class on the command line."""
    argv = kafka_tools.argv(BOOTSTRAP, BINARIES, name, list(args), CONFIG)
    return argv[argv.index(TOOLS[name].main) + 1 :]


def test_the_tools_main_class_runs_from_the_cached_jars_with_the_quiet_log4j() -> None:
    argv = kafka_tools.argv(BOOTSTRAP, BINARIES, "topics", ["--list"], CONFIG)
    assert argv[0] == "/usr/bin/java"
    assert argv[argv.index("-cp") + 1] == "/cache/kafka/libs/*"
    assert f"-Dlog4j.configuration=file:{TOOLS_LOG4J}" in argv
    assert "-Xmx256m" in argv
    assert argv[-6:] == ["org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BOOTSTRAP,
                         *SIGNED_IN, "--list"]  # fmt: skip


def test_the_brokers_come_first_so_tools_with_subcommands_take_them() -> None:
    assert tool_args("metadata-quorum", "describe", "--status") == [
        "--bootstrap-server", BOOTSTRAP, *SIGNED_IN, "describe", "--status"]  # fmt: skip


@pytest.mark.parametrize(
    "given",
    [
        ["--bootstrap-server", "127.0.0.1:1", "--list"],
        ["--bootstrap-server=127.0.0.1:1", "--list"],
    ],
)
def test_a_bootstrap_server_the_user_gives_is_kept(given: list[str]) -> None:
    assert tool_args("topics", *given) == [*SIGNED_IN, *given]


def test_metadata_quorum_may_ask_the_controllers_instead() -> None:
    given = ["--bootstrap-controller", "127.0.0.1:1", "describe", "--status"]
    assert tool_args("metadata-quorum", *given) == [*SIGNED_IN, *given]


def test_producer_perf_test_gets_the_brokers_in_its_producer_props() -> None:
    base = ["--topic", "t", "--num-records", "10", "--record-size", "100", "--throughput", "-1"]
    servers = f"bootstrap.servers={BOOTSTRAP}"
    signed_in = ["--producer.config", str(CONFIG)]
    assert tool_args("producer-perf-test", *base) == [
        *signed_in, *base, "--producer-props", servers]  # fmt: skip
    with_props = [*base, "--producer-props", "acks=all", "linger.ms=5"]
    assert tool_args("producer-perf-test", *with_props) == [
        *signed_in, *base, "--producer-props", servers, "acks=all", "linger.ms=5"]  # fmt: skip
    own = [*base, "--producer-props", "bootstrap.servers=127.0.0.1:1"]
    assert tool_args("producer-perf-test", *own) == [*signed_in, *own]
    assert TOOLS["producer-perf-test"].heap == "512m"


def test_dump_log_reads_files_and_gets_no_brokers() -> None:
    assert tool_args("dump-log", "--files", "00000000000000000000.log") == [
        "--files", "00000000000000000000.log"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("topics", "--command-config"),
        ("consumer-groups", "--command-config"),
        ("console-consumer", "--consumer.config"),
        ("console-producer", "--producer.config"),
        ("consumer-perf-test", "--consumer.config"),
        ("leader-election", "--admin.config"),
    ],
)
def test_each_tool_signs_in_with_the_admin_settings_through_its_own_option(
    name: str, option: str
) -> None:
    assert tool_args(name)[-2:] == [option, str(CONFIG)]


@pytest.mark.parametrize("given", [["--command-config", "mine.properties"],
                                   ["--command-config=mine.properties"]])  # fmt: skip
def test_client_settings_the_user_gives_are_kept(given: list[str]) -> None:
    assert tool_args("topics", *given, "--list") == [
        "--bootstrap-server", BOOTSTRAP, *given, "--list"]  # fmt: skip


def test_the_familiar_script_names_are_there() -> None:
    assert {
        "topics", "consumer-groups", "producer-perf-test", "consumer-perf-test",
        "console-consumer", "console-producer", "get-offsets", "log-dirs", "metadata-quorum",
    } <= set(TOOLS)  # fmt: skip


def test_the_tools_log4j_config_logs_warnings_and_errors_to_stderr_only() -> None:
    lines = [line for line in TOOLS_LOG4J.read_text().splitlines() if not line.startswith("#")]
    props = dict(line.split("=", 1) for line in lines if line)
    assert props["log4j.rootLogger"] == "WARN, stderr"
    assert props["log4j.appender.stderr.Target"] == "System.err"


def test_the_cli_hands_the_rest_of_the_line_to_the_tool() -> None:
    args = cli.build_parser().parse_args(["kafka", "consumer-groups", "--describe", "--all-groups"])
    assert (args.func, args.tool, args.args) == (
        cli.cmd_kafka, "consumer-groups", ["--describe", "--all-groups"])  # fmt: skip
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["kafka", "no-such-tool"])


def test_every_tools_main_class_is_in_the_provisioned_jars() -> None:
    if not KAFKA.is_installed(cache_dir()):
        pytest.fail("Kafka is not in the cache: run `mesh install` (make test does) first")
    classes = set()
    for jar in KAFKA.binaries(cache_dir())["libs"].glob("*.jar"):
        with zipfile.ZipFile(jar) as archive:
            classes |= {n.removesuffix(".class").replace("/", ".") for n in archive.namelist()}
    missing = {name: tool.main for name, tool in TOOLS.items() if tool.main not in classes}
    assert not missing, missing
