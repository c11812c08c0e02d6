"""Audit trail: append-only JSON lines, each written whole or not at all.

``JsonlFile`` is the one JSONL writer of hotfix: the transaction's audit
log (``configure(audit_log=...)``: one record per step, saying who, what,
when, the verdict and sha256 of what was verified, and the outcome) and the
admin endpoint's request log (``hotfix.admin._audit``) both go through it.

Why each line is whole: a record is encoded first, then written with one
``os.write`` on a descriptor opened with ``O_APPEND`` (concurrent writers
never interleave inside a line). A write that comes up short (a disk that
fills mid-line) is truncated back to the size the file had before it, so
the file always parses line by line; the caller gets ``AuditWriteError``
naming the file. A process killed mid-write can at worst leave the last
line unterminated: readers skip a last line without its newline
(``read_records``), and the next writer starts a new line after it.

``preflight()`` is how a transaction finds out, before it pauses anything,
that the audit file cannot be written (a missing or read-only directory, a
file it may not open, a full disk): it refuses instead of discovering it
after the swap.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ._tracing import step as _observe_step

#: Test hook (fault injection): called with the record's step before each write; may raise.
fault_hook: Callable[[str], None] | None = None
_write_lock = threading.Lock()


class AuditWriteError(OSError):
    """Internal: an audit record could not be written (``path`` names the file; nothing partial is left)."""

    def __init__(self, path: str, cause: BaseException) -> None:
        code = cause.errno if isinstance(cause, OSError) and cause.errno is not None else errno.EIO
        super().__init__(code, f"cannot write the audit file {path}: {cause}", path)
        self.path = path
        self.cause = cause


class JsonlFile:
    """One JSON object per line, appended whole (see the module notes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def preflight(self) -> None:
        """Raise ``AuditWriteError`` if a record could not be appended now (creates the file)."""
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                st = os.fstatvfs(fd)
                if st.f_bavail == 0 and st.f_blocks > 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditWriteError(self.path, exc) from None

    def append(self, record: Mapping[str, object], step: str = "") -> None:
        """Write one record as one line, whole or not at all; ``AuditWriteError`` otherwise."""
        line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode("utf-8")
        with _write_lock:  # one lock for every writer in the process: truncating back never cuts a neighbour
            try:  # read access too: to see whether the last line is terminated
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise AuditWriteError(self.path, exc) from None
            try:
                self._write_whole(fd, line, step)
            finally:
                os.close(fd)

    def _write_whole(self, fd: int, line: bytes, step: str) -> None:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a killed writer left a last line unterminated: start a new one
        try:
            if fault_hook is not None:
                fault_hook(f"audit:{step}")
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        except BaseException as exc:
            try:
                if os.fstat(fd).st_size > size:
                    os.ftruncate(fd, size)
            except OSError:
                pass  # nothing more can be done; readers skip an unterminated last line
            if isinstance(exc, OSError):
                raise AuditWriteError(self.path, exc) from None
            raise


def read_records(path: str | os.PathLike[str]) -> Iterator[dict]:
    """Every complete record of a JSONL file (a last line without its newline is skipped)."""
    with open(path, "rb") as fh:
        data = fh.read()
    for raw in data.split(b"\n")[:-1]:
        if raw.strip():
            yield json.loads(raw)


# --------------------------------------------------------------------------- the transaction's log

_configure_lock = threading.Lock()
_file: JsonlFile | None = None


def configure_audit(path: str | os.PathLike[str] | None) -> None:
    """Append audit records to ``path`` (JSON lines); ``None`` turns it off. Refuses a file it cannot write."""
    global _file
    target = JsonlFile(path) if path is not None else None
    if target is not None:
        target.preflight()
    with _configure_lock:
        _file = target


def audit_path() -> str | None:
    target = _file
    return target.path if target is not None else None


def preflight() -> None:
    """``AuditWriteError`` if the configured audit file cannot be written now."""
    target = _file
    if target is not None:
        target.preflight()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())


def audit(step: str, patch_id: str | None, actor: str | None, **fields: object) -> dict:
    """Append one record; ``AuditWriteError`` if it could not be written (nothing partial is left)."""
    record = {"ts": time.time(), "step": step, "patch_id": patch_id, "actor": actor or "api",
              "pid": os.getpid(), "user": _user(), **fields}
    _observe_step(step, record)  # telemetry: a span event and held-time metrics per step
    target = _file
    if target is not None:
        target.append(record, step)
    return record


def _reset_after_fork_in_child() -> None:
    global _configure_lock, _write_lock
    _configure_lock = threading.Lock()
    _write_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork_in_child)
