from __future__ import annotations

from pathlib import Path

from mesh.runtime.provision import COMPONENTS, Component


def test_changing_a_pin_changes_only_that_components_install_dir(tmp_path: Path) -> None:
    a = Component(name="thing", version="1.0", pin={"sha256": "aa"})
    b = Component(name="thing", version="1.0", pin={"sha256": "bb"})
    assert a.home(tmp_path) != b.home(tmp_path)
    assert a.home(tmp_path) == Component(name="thing", version="1.0", pin={"sha256": "aa"}).home(
        tmp_path
    )


def test_a_component_without_its_stamp_is_not_installed(tmp_path: Path) -> None:
    component = Component(name="thing", version="1.0", locate=lambda c, home: {"bin": home / "bin"})
    home = component.home(tmp_path)
    home.mkdir(parents=True)
    (home / "bin").write_text("half-written")
    assert not component.is_installed(tmp_path)


def test_every_component_is_pinned_to_an_exact_version() -> None:
    versions = {c.name: c.version for c in COMPONENTS}
    assert versions["consul"] == "1.16.1"
    assert versions["envoy"].count(".") == 2
    envoy = next(c for c in COMPONENTS if c.name == "envoy")
    assert len(envoy.pin["wheel_sha256"]) == 64
