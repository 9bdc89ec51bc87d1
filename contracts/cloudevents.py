"""CloudEvents 1.0 envelopes (structured JSON): docs/messaging.md, "The message"."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

SPECVERSION = "1.0"


def cloud_event(
    *, source: str, type: str, subject: str, data: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    return {
        "specversion": SPECVERSION,
        "id": event_id or str(uuid.uuid4()),
        "source": f"shopmesh/{source}",
        "type": type,
        "subject": subject,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
