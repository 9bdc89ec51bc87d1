"""Running the provisioned load tools and reading their reports."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.bench.figures import Figures, from_ghz, from_vegeta, from_wrk
from mesh.bench.targets import split
from mesh.runtime.paths import cache_dir
from mesh.runtime.provision import GHZ, H3LOAD, VEGETA, WRK, Component

REQUEST_TIMEOUT_S = 10
# Closed-loop ceilings: this many requests in flight in all (vegeta's -max-workers, ghz's -c).
CEILING_WORKERS = 64


class ToolError(RuntimeError):
    """A load tool failed; the message has its output."""


def binary(component: Component) -> Path:
    """A provisioned tool's binary (built or installed by `mesh install`, here on first use)."""
    component.install(cache_dir())
    return component.binaries(cache_dir())[component.name]


def _run(argv: list[str], timeout_s: float) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{argv[0]} did not finish in {timeout_s:.0f}s") from exc
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(argv[:3])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


@dataclass(frozen=True)
class HttpAttack:
    """One attack, split over one tool process per source address."""

    targets: Path
    rate: int  # requests per second in all; 0: closed loop with `workers` in flight
    duration_s: float
    sources: tuple[str, ...]
    http3: bool = False
    http2: bool = True
    root_certs: Path | None = None
    workers: int = CEILING_WORKERS
    # A source's own targets, where processes must not share them: each POST /orders is a new
    # order, and a key sent by every process would be one order and its replays.
    targets_by_source: Mapping[str, Path] = field(default_factory=dict)

    def argv(self, tool: Path, source: str, rate: int, workers: int, output: Path) -> list[str]:
        argv = [str(tool)] if self.http3 else [str(tool), "attack", "-format=json"]
        argv += [
            f"-targets={self.targets_by_source.get(source, self.targets)}",
            f"-duration={self.duration_s:g}s",
            f"-timeout={REQUEST_TIMEOUT_S}s",
            f"-laddr={source}",
            f"-output={output}",
        ]
        argv += [f"-rate={rate}"] if self.http3 else [f"-rate={rate}/1s"]
        if self.rate == 0:
            argv += [f"-workers={workers}", f"-max-workers={workers}"]
        if not self.http3:
            argv.append(f"-http2={str(self.http2).lower()}")
        if self.root_certs is not None:
            argv.append(f"-root-certs={self.root_certs}")
        return argv

    def processes(self) -> list[tuple[str, int, int]]:
        """(source, rate, workers) of each process; none with nothing to do."""
        rates = split(self.rate, len(self.sources))
        workers = split(self.workers, len(self.sources))
        return [
            (source, rate, worker)
            for source, rate, worker in zip(self.sources, rates, workers, strict=True)
            if (rate if self.rate else worker) > 0
        ]


def attack(spec: HttpAttack) -> Figures:
    """Run the attack's processes side by side; one vegeta report over all their results."""
    tool = binary(H3LOAD if spec.http3 else VEGETA)
    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
        outputs, procs = [], []
        for n, (source, rate, workers) in enumerate(spec.processes()):
            output = Path(tmp) / f"results-{n}.bin"
            argv = spec.argv(tool, source, rate, workers, output)
            procs.append((argv, subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)))
            outputs.append(output)
        for argv, proc in procs:
            _, stderr = proc.communicate(timeout=spec.duration_s + 4 * REQUEST_TIMEOUT_S)
            if proc.returncode != 0:
                raise ToolError(f"{' '.join(argv[:2])} exited {proc.returncode}:\n{stderr[-2000:]}")
        report = _run([str(binary(VEGETA)), "report", "-type=json", *map(str, outputs)], 120)
    return from_vegeta(json.loads(report))


@dataclass(frozen=True)
class GrpcAttack:
    address: str
    call: str
    data: dict[str, Any]
    metadata: dict[str, str]
    protoset: Path
    rate: int  # 0: closed loop with `workers` in flight
    duration_s: float
    workers: int = CEILING_WORKERS
    connections: int = 2

    def argv(self, tool: Path) -> list[str]:
        argv = [
            str(tool),
            "--insecure",
            f"--protoset={self.protoset}",
            f"--call={self.call}",
            f"--data={json.dumps(self.data)}",
            f"--metadata={json.dumps(self.metadata)}",
            f"--duration={self.duration_s:g}s",
            f"--timeout={REQUEST_TIMEOUT_S}s",
            f"--concurrency={self.workers}",
            f"--connections={self.connections}",
            "--format=json",
        ]
        if self.rate:
            argv.append(f"--rps={self.rate}")
        return [*argv, self.address]


def grpc_attack(spec: GrpcAttack) -> Figures:
    out = _run(spec.argv(binary(GHZ)), spec.duration_s + 4 * REQUEST_TIMEOUT_S)
    return from_ghz(json.loads(out))


def wrk(url: str, headers: dict[str, str], duration_s: float, connections: int) -> Figures:
    """wrk's closed loop (HTTP/1.1, one header set: no round robin over users, no source
    address), so it fits only a service's own port or a sidecar's."""
    argv = [str(binary(WRK)), "-t2", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    argv += [f"--timeout={REQUEST_TIMEOUT_S}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return from_wrk(_run([*argv, url], duration_s + 4 * REQUEST_TIMEOUT_S))
