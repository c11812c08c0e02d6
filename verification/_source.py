"""Reading a module's source file: the only source of new code.

Always the bytes on disk, never ``__pycache__``: the import system's ``.pyc``
check compares mtime and size only, so an edit that keeps both is invisible
to it. We hash the content instead (sha256 is the authority).
"""

from __future__ import annotations

import io
import os
import tokenize

import attrs

from ._running import Baseline, sha256_hex

__all__ = ["MAX_SOURCE_BYTES", "Baseline", "FileState", "SourceFile", "SourceProblem", "decode_source", "read_source",
           "read_state", "sha256_hex"]

#: Files larger than this are refused rather than read into memory.
MAX_SOURCE_BYTES = 16 * 1024 * 1024


@attrs.frozen
class FileState:
    """What a source file was at one moment: enough to tell whether it changed."""

    path: str
    mtime_ns: int
    size: int
    sha256: str

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class SourceFile:
    """A source file read from disk: its state, raw bytes and decoded text."""

    state: FileState
    data: bytes = attrs.field(repr=False)
    text: str = attrs.field(repr=False)


class SourceProblem(Exception):
    """Internal: reading or decoding the file failed; ``code`` is a reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_source(data: bytes, path: str) -> str:
    """Decode like the import system (PEP 263 cookie or UTF-8), strictly."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        raise SourceProblem("undecodable-file", f"{path}: {exc.msg}") from None
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise SourceProblem(
            "undecodable-file", f"{path} is not valid {encoding} text: {exc}"
        ) from None
    if "\x00" in text:
        raise SourceProblem("undecodable-file", f"{path} contains NUL bytes; it is not Python source")
    # Universal newlines, as the import system does.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_all(fh: io.BufferedReader, size: int) -> bytes:
    """The file's bytes, at most ``MAX_SOURCE_BYTES + 1``: ``size`` (from fstat) + 1 first, the rest if it grew.

    (``read(MAX_SOURCE_BYTES + 1)`` at once allocates 16 MiB every time: ~60 us of a re-check under a pause.)
    """
    data = fh.read(min(size, MAX_SOURCE_BYTES) + 1)
    if len(data) > size and len(data) <= MAX_SOURCE_BYTES:
        data += fh.read(MAX_SOURCE_BYTES + 1 - len(data))
    return data


def read_state(path: str) -> FileState:
    """Just the file's state (stat and sha256 of its bytes): the cheap re-check under a pause."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = _read_all(fh, st.st_size)
    except OSError as exc:
        raise SourceProblem("file-unreadable", f"{path} cannot be read: {exc.strerror or exc}") from None
    return FileState(path=path, mtime_ns=st.st_mtime_ns, size=len(data), sha256=sha256_hex(data))


def read_source(path: str) -> SourceFile:
    """Read ``path`` once: stat and bytes come from the same open file."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not _is_regular(st.st_mode):
                raise SourceProblem("not-a-file", f"{path} is not a regular file")
            if st.st_size > MAX_SOURCE_BYTES:
                raise SourceProblem(
                    "file-too-large",
                    f"{path} is {st.st_size} bytes, over the {MAX_SOURCE_BYTES}-byte limit",
                )
            data = _read_all(fh, st.st_size)
    except FileNotFoundError:
        raise SourceProblem("file-missing", f"{path} does not exist") from None
    except IsADirectoryError:
        raise SourceProblem("not-a-file", f"{path} is a directory, not a source file") from None
    except PermissionError:
        raise SourceProblem("file-unreadable", f"{path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise SourceProblem("file-unreadable", f"{path} cannot be read: {exc.strerror or exc}") from None
    state = FileState(path=path, mtime_ns=st.st_mtime_ns, size=len(data), sha256=sha256_hex(data))
    return SourceFile(state=state, data=data, text=decode_source(data, path))


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)
