"""The mesh's intentions, read from the config entries the native runtime applies
(mesh/consul/config-entries/service-intentions-*.hcl): one source for both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hcl2

from mesh.components.consul import CONFIG_ENTRIES_DIR


@dataclass(frozen=True)
class Intention:
    """Who may call `destination` (`*`: every service), and with which action."""

    destination: str
    sources: tuple[tuple[str, str], ...]

    def allowed(self) -> tuple[str, ...]:
        return tuple(name for name, action in self.sources if action == "allow")


def load_intentions(directory: Path = CONFIG_ENTRIES_DIR) -> tuple[Intention, ...]:
    intentions = []
    for path in sorted(directory.glob("service-intentions-*.hcl")):
        with path.open() as fh:
            entry = hcl2.load(fh)
        intentions.append(
            Intention(
                destination=unquoted(entry["Name"]),
                sources=tuple(
                    (unquoted(source["Name"]), unquoted(source["Action"]))
                    for source in entry["Sources"]
                ),
            )
        )
    return tuple(intentions)


def unquoted(value: object) -> str:
    """A string literal of a config entry: python-hcl2 keeps its quotes."""
    return str(value).strip('"')
