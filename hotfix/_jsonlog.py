"""A JSON log formatter: one object per record, on one line.

    handler.setFormatter(hotfix.JSONFormatter())

Keys, always present (``null`` when unknown)::

    ts          RFC 3339 UTC time with microseconds ("2026-12-01T15:04:05.123456Z")
    level       "INFO", "WARNING", ...
    logger      logger name ("hotfix", "hotfix.admin", "hotfix.audit", ...)
    message     the formatted message
    patch_id    the transaction's id ("hf-1234-7"), set on every record of a transaction
    trace_id    the active OpenTelemetry trace (32 hex digits), when a span is active
    span_id     the active span (16 hex digits)
    module      the module(s) patched, comma separated (from ``extra={"modules": [...]}``
                or the audit record; not LogRecord.module, which names the logging code's file)
    outcome     how the step or request ended (applied, rejected, rolled-back, ...)

plus ``reason``, ``actor`` and ``route`` when the record has them, ``exception`` (the
formatted traceback) when it carries one, and ``pid``/``thread`` for correlation
across processes of a pre-fork server. Fields come from the record's
attributes (``extra=``), then from an admin audit record (``record.audit``).
Records of any logger can use it; non-hotfix records simply have nulls.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from ._tracing import current_ids

CORE_KEYS = ("ts", "level", "logger", "message", "patch_id", "trace_id", "span_id", "module", "outcome")
OPTIONAL_KEYS = ("reason", "actor", "route", "status")


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object per line (see the module notes for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        audit = getattr(record, "audit", None)
        audit = audit if isinstance(audit, dict) else {}

        def field(name: str) -> Any:
            value = getattr(record, name, None)
            return audit.get(name) if value is None else value

        trace_id, span_id = field("trace_id"), field("span_id")
        if trace_id is None:
            trace_id, span_id = current_ids()
        # LogRecord.module is the *source file's* module name: the patched module(s) come from
        # ``extra={"modules": [...]}`` or the audit record instead.
        module = audit.get("module")
        if module is None:
            modules = field("modules")
            module = ",".join(map(str, modules)) if isinstance(modules, list | tuple) else modules
        doc: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "patch_id": field("patch_id"),
            "trace_id": trace_id,
            "span_id": span_id,
            "module": module,
            "outcome": field("outcome"),
        }
        for name in OPTIONAL_KEYS:
            value = field(name)
            if value is not None:
                doc[name] = getattr(value, "value", value)
        doc["pid"] = record.process
        doc["thread"] = record.threadName
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False, separators=(",", ":"))
