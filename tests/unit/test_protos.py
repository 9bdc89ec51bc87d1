from __future__ import annotations

from pathlib import Path

from mesh.runtime import protos


def test_generated_stubs_exist_and_match_the_protos(tmp_path: Path) -> None:
    assert protos.STUBS_DIR.exists(), "gRPC stubs are missing: run `mesh install`"
    assert protos.STAMP.read_text().strip() == protos.fingerprint(), (
        "gRPC stubs are stale: run `mesh install`"
    )
    protos.generate_into(tmp_path, tmp_path / "protos.pb")
    fresh = {
        p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "shopmesh").rglob("*.py*")
    }
    current = {
        p.relative_to(protos.STUBS_DIR.parent): p.read_bytes()
        for p in protos.STUBS_DIR.rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    assert fresh == current


def test_every_service_has_http_annotations_for_the_edge_transcoder() -> None:
    from google.api import annotations_pb2

    from shopmesh.payments.v1 import payments_pb2
    from shopmesh.users.v1 import users_pb2

    for module in (users_pb2, payments_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                assert rule.WhichOneof("pattern"), f"{service.name}.{method.name} has no http rule"


def test_the_descriptor_set_counts_as_generated_only_from_the_current_protos(tmp_path) -> None:
    stamp = tmp_path / "protos.pb.generated-from"
    assert protos.generated_from(stamp) is None
    stamp.write_text("an older fingerprint\n")
    assert protos.generated_from(stamp) != protos.fingerprint()
    assert protos.generated_from(protos.DESCRIPTOR_STAMP) == protos.fingerprint()
