"""The intentions the native runtime applies (mesh/consul/config-entries), read from their HCL
on their own: what the chart's ServiceIntentions and NetworkPolicies are compared with."""

from __future__ import annotations

from collections.abc import Iterator

import hcl2

from mesh.components.consul import CONFIG_ENTRIES_DIR


def native_intentions() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(destination, [{"name": source, "action": allow|deny}, ...]) per config entry."""
    for path in sorted(CONFIG_ENTRIES_DIR.glob("service-intentions-*.hcl")):
        with path.open() as fh:
            entry = hcl2.load(fh)
        sources = [
            {"name": s["Name"].strip('"'), "action": s["Action"].strip('"')}
            for s in entry["Sources"]
        ]
        yield entry["Name"].strip('"'), sources
