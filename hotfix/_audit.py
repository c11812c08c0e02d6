"""Audit trail: an optional append-only JSONL file, one record per step.

Each record says who (actor, pid, user), what (step, modules), when (ts),
the verdict and sha256 of what was verified, and the outcome. The file is
opened in append mode for every record and flushed, so a crash loses at most
the record being written and concurrent writers never interleave partial
lines (each record is one ``write`` of one line).
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
from pathlib import Path

from ._tracing import step as _observe_step

_lock = threading.Lock()
_path: Path | None = None


def configure_audit(path: str | os.PathLike[str] | None) -> None:
    """Append audit records to ``path`` (JSON lines); ``None`` turns it off."""
    global _path
    with _lock:
        _path = Path(path) if path is not None else None
        if _path is not None:
            _path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return str(os.getuid())


def audit(step: str, patch_id: str | None, actor: str | None, **fields: object) -> dict:
    record = {"ts": time.time(), "step": step, "patch_id": patch_id, "actor": actor or "api",
              "pid": os.getpid(), "user": _user(), **fields}
    _observe_step(step, record)  # telemetry: a span event and held-time metrics per step
    with _lock:
        if _path is not None:
            line = json.dumps(record, default=str, sort_keys=True) + "\n"
            with open(_path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
    return record
