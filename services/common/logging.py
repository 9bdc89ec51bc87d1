"""Structured logs: one JSON object per line on stderr.

Every line carries ts, level, service, instance and msg; fields passed with `extra=` follow,
then `trace_id` and `span_id` (hex) when a span is current (the access log's: the request's).
Fields whose names suggest a secret are redacted, and request logs never include query strings
(WebSocket clients may carry a token there).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from opentelemetry import trace

from services.common.telemetry import SPAN_CONTEXT

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|cookie|api_?key|credential|dsn|database_url",
    re.IGNORECASE,
)
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service = service
        self._instance = instance

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self._service,
            "instance": self._instance,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _RECORD_ATTRIBUTES or key in payload or key.startswith("_"):
                continue
            payload[key] = REDACTED if _SENSITIVE_KEY.search(key) else value
        span_context = getattr(record, "_span_context", None) or (
            trace.get_current_span().get_span_context()
        )
        if span_context.is_valid:
            payload["trace_id"] = trace.format_trace_id(span_context.trace_id)
            payload["span_id"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(service: str, instance: str, level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines, at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def redact_url(url: str) -> str:
    """`url` with its password replaced, safe to log (e.g. a database URL)."""
    parts = urlsplit(url)
    # By hand, not parts.password: a multi-host URL (host1:port1,host2:port2) has no one port.
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hosts}"))


def error_fields(exc: BaseException) -> dict[str, str]:
    """The `error` field of a log line about `exc`: its type and message."""
    return {"error": f"{type(exc).__name__}: {exc}"}


def outcome_level(*, client_error: bool, server_error: bool) -> int:
    """How loud a request's own log line is. A successful request is logged at debug only: the
    edge's access log, the RED metrics and the traces already account for each one, and a line
    per request was 7 % of a busy service's time (py-spy). A refusal is info, a failure a
    warning."""
    if server_error:
        return logging.WARNING
    return logging.INFO if client_error else logging.DEBUG


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access log as structured fields, at outcome_level (health checks: debug)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        status = response.status
        level = (
            logging.DEBUG
            if request.path == "/health"
            else outcome_level(client_error=400 <= status < 500, server_error=status >= 500)
        )
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
                # Logged after the request's span ended: it is kept on the request.
                "_span_context": request.get(SPAN_CONTEXT),
            },
        )
