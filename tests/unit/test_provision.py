from __future__ import annotations

from pathlib import Path

from mesh.runtime.provision import COMPONENTS, GO_BUILD_FLAGS, GO_WRAPPERS_DIR, Component


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


def test_the_rate_limit_service_is_built_from_its_pinned_wrapper_module() -> None:
    ratelimit = next(c for c in COMPONENTS if c.name == "ratelimit")
    assert ratelimit.version == "1.4.1-0.20260122083618-3fb702589d36"
    go_mod = (GO_WRAPPERS_DIR / "ratelimit" / "go.mod").read_text()
    assert f"require github.com/envoyproxy/ratelimit v{ratelimit.version}\n" in go_mod
    assert "\nreplace " not in go_mod  # upstream's go.mod has none to copy
    # A changed go.mod, go.sum or tools.go changes the install directory: a rebuild.
    assert set(ratelimit.pin) == {"go.mod", "go.sum", "tools.go", "build_flags"}
    assert ratelimit.pin["build_flags"] == GO_BUILD_FLAGS


def test_redis_is_debians_7_0_package() -> None:
    redis = next(c for c in COMPONENTS if c.name == "redis")
    assert redis.version == "7.0"
    assert redis.binaries(Path("/unused"))["redis-server"] == Path("/usr/bin/redis-server")
