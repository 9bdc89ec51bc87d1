"""The ServiceDefaults of the chart, read from the config entries the native runtime applies
(mesh/consul/config-entries/service-defaults-*.hcl): one source for both. consul-k8s's CRD
spells each field of the config entry in lower camel case (`UpstreamConfig.Defaults.Limits` is
`upstreamConfig.defaults.limits`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

from mesh.components.consul import CONFIG_ENTRIES_DIR
from mesh.helm.intentions import unquoted

# What names the config entry; the CR's kind and metadata say it instead.
_IDENTITY = frozenset({"Kind", "Name"})


def service_defaults_spec(service: str, directory: Path = CONFIG_ENTRIES_DIR) -> dict[str, Any]:
    with (directory / f"service-defaults-{service}.hcl").open() as fh:
        entry = hcl2.load(fh)
    return {
        _camel(key): _spec_value(value)
        for key, value in entry.items()
        if key not in _IDENTITY and not key.startswith("__")
    }


def _spec_value(value: Any) -> Any:
    # python-hcl2 gives a block as a list of one dict marked `__is_block__`.
    if isinstance(value, list) and len(value) == 1 and _is_block(value[0]):
        return _spec_value(value[0])
    if isinstance(value, list):
        return [_spec_value(item) for item in value]
    if isinstance(value, dict):
        return {
            _camel(key): _spec_value(item)
            for key, item in value.items()
            if not key.startswith("__")
        }
    if isinstance(value, str):
        return unquoted(value)
    return value


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__is_block__") is True


def _camel(key: str) -> str:
    return key[:1].lower() + key[1:]
