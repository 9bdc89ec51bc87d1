"""gRPC stubs and the descriptor set, generated from protos/ by the build (never by hand).

Python stubs go to `<repo>/shopmesh/` (git-ignored; importable as `shopmesh.users.v1`), the
descriptor set Envoy's grpc_json_transcoder reads goes to `<repo>/build/protos.pb`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from mesh.runtime.paths import REPO_ROOT

PROTO_ROOT = REPO_ROOT / "protos"
STUBS_DIR = REPO_ROOT / "shopmesh"
DESCRIPTOR_SET = REPO_ROOT / "build" / "protos.pb"
STAMP = STUBS_DIR / ".generated-from"
# The descriptor set has a stamp of its own: stubs and descriptor are written to two places,
# and a descriptor left from other protos made the edge's transcoder miss a new RPC.
DESCRIPTOR_STAMP = DESCRIPTOR_SET.with_name(DESCRIPTOR_SET.name + ".generated-from")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def fingerprint() -> str:
    digest = hashlib.sha256(metadata.version("grpcio-tools").encode())
    for path in proto_files():
        digest.update(str(path.relative_to(PROTO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _googleapis_include() -> Path:
    """The directory holding google/api/annotations.proto (googleapis-common-protos)."""
    import google.api

    return Path(next(iter(google.api.__path__))).parent.parent


def _grpc_tools_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def generate_into(out_dir: Path, descriptor_set: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor_set.parent.mkdir(parents=True, exist_ok=True)
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_ROOT}", f"-I{_googleapis_include()}", f"-I{_grpc_tools_include()}",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        f"--descriptor_set_out={descriptor_set}", "--include_imports",
        *files,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=PROTO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed:\n{proc.stderr}")
    root = out_dir / "shopmesh"
    for directory in [root, *root.rglob("*")]:
        if directory.is_dir():
            (directory / "__init__.py").touch()


def generated_from(stamp: Path) -> str | None:
    """The fingerprint of the protos an output was generated from (None: none recorded)."""
    return stamp.read_text().strip() if stamp.exists() else None


def ensure_generated() -> bool:
    """Generate the stubs when missing or stale; True if they were (re)generated."""
    wanted = fingerprint()
    if all(generated_from(stamp) == wanted for stamp in (STAMP, DESCRIPTOR_STAMP)):
        return False
    with tempfile.TemporaryDirectory(dir=REPO_ROOT) as tmp:
        fresh = Path(tmp) / "shopmesh"
        generate_into(Path(tmp), DESCRIPTOR_SET)
        (fresh / STAMP.name).write_text(wanted + "\n")
        if STUBS_DIR.exists():
            shutil.rmtree(STUBS_DIR)
        fresh.rename(STUBS_DIR)
    DESCRIPTOR_STAMP.write_text(wanted + "\n")
    return True
