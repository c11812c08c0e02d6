"""Audit trail: one record per request on logger ``hotfix.audit``, optionally JSONL.

A record holds the time, method, path, matched route, status, remote
address, transport, module, outcome, patch id and duration. Never the token
and never the request body. The file is written by ``hotfix._audit.JsonlFile``
(one writer for every JSONL file: each line whole or not at all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from .._audit import JsonlFile

audit_log = logging.getLogger("hotfix.audit")

AuditTarget = str | os.PathLike | Callable[[dict], Any] | None


class AuditSink:
    """Writes each record to ``hotfix.audit`` and to the configured target."""

    def __init__(self, target: AuditTarget = None) -> None:
        self._file: JsonlFile | None = None
        self._callback: Callable[[dict], Any] | None = None
        if callable(target):
            self._callback = target
        elif target is not None:
            self._file = JsonlFile(target)

    @property
    def path(self) -> str | None:
        return self._file.path if self._file is not None else None

    def __call__(self, record: dict) -> None:
        level = logging.WARNING if record.get("status", 200) in (401, 403) else logging.INFO
        audit_log.log(level, "%s %s -> %s%s%s", record.get("method"), record.get("path"),
                      record.get("status"),
                      f" module={record['module']}" if record.get("module") else "",
                      f" outcome={record['outcome']}" if record.get("outcome") else "",
                      extra={"audit": record, "patch_id": record.get("patch_id")})
        if self._callback is not None:
            try:
                self._callback(dict(record))
            except Exception:  # an audit callback must not break the endpoint
                audit_log.exception("audit callback failed")
        if self._file is not None:
            try:
                self._file.append(record, "request")
            except OSError:
                audit_log.exception("cannot append to the audit file %s", self._file.path)


def printable(text: str, limit: int = 200) -> str:
    """A log-safe version of client-controlled text."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")[:limit]
