"""The messaging tables' migrations: shared sets (services.common.migrations), kept once next to
the code that uses the tables and applied to each service database that declares them.

Two sets, not one: a service that writes events needs `outbox`, one that consumes them needs
`processed_events`, and some need only one (users only publishes; auth and notifications only
consume). A set is applied whole, so a single set would give consumers an outbox nothing relays.

The SQL is byte for byte what the services' folders held as copies before these sets existed:
an existing database's records of those copies are recognised by their checksum and moved to
the sets (services.common.migration_history). It cannot change once applied, which is why the
processed_events comment still names messaging.consumer, since split into consumer, processor
and processed.
"""

from __future__ import annotations

from pathlib import Path

from services.common.migrations import MigrationSet

_HERE = Path(__file__).parent

OUTBOX = MigrationSet("outbox", _HERE / "outbox")
PROCESSED_EVENTS = MigrationSet("processed_events", _HERE / "processed_events")
