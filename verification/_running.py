"""The version of a module that is running: what ``hotfix.install()`` records at import.

One ``Baseline`` per module imported after ``install()``, created inside the
import itself, so this module is cheap to load and to use: no ``attrs``, no
``ast`` (``import hotfix; hotfix.install()`` must cost about as little as
importing ``logging``), and it keeps little memory:

* the source is kept once, zlib-compressed (Python source compresses to
  about a quarter): the text is decoded again when a dry run or a patch
  asks for it, which is rare next to imports (a patched module keeps the
  text its patch was verified with, shared with the parsed model);
* of the module's import-time code object only an *index* is kept: the
  code objects of its top-level definitions (the same objects the module's
  functions already hold, so they cost nothing more) and its ``co_flags``.
  That is all a first dry run needs to pair each definition with its code
  without compiling the running text again (``verification._model``); the
  module body's own bytecode, names and line table, used once at import,
  are dropped.

``state`` is a ``FileState`` (an ``attrs`` value object), made when asked.
"""

from __future__ import annotations

import hashlib
import types
import zlib

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs more than this module
if TYPE_CHECKING:
    from ._source import FileState

#: zlib level for kept source: the fastest (imports pay for it), ~4x smaller than the text.
_LEVEL = 1
#: The body of the index code object (see ``code_index``): an empty module.
_EMPTY = compile("", "<index>", "exec", dont_inherit=True)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_index(code: types.CodeType) -> types.CodeType:
    """``code``'s top-level code objects (as constants) and ``co_flags`` under an empty body.

    It is an index, not a runnable module body (running it does nothing):
    ``iter_code_tree`` finds every definition in it exactly as in ``code``.
    An index given again comes back equal.
    """
    nested = tuple(c for c in code.co_consts if isinstance(c, types.CodeType))
    return _EMPTY.replace(co_filename=code.co_filename, co_flags=code.co_flags, co_consts=(*_EMPTY.co_consts, *nested))


class Baseline:
    """The version of a module that is running: its file's state, its source text and code index.

    ``Baseline(state, text, code)`` keeps ``text`` as given (a patch adopts the
    text its plan already holds: nothing is copied or compressed while
    workers are parked); the import hook uses ``Baseline.imported``, which
    keeps the file's bytes compressed and decodes them like the import system
    when asked. Immutable: a new version is a new ``Baseline``.
    """

    __slots__ = ("_source", "code", "mtime_ns", "path", "sha256", "size")

    path: str
    mtime_ns: int
    size: int
    sha256: str
    #: the index of the module code compiled from this text at import (``code_index``), or None
    code: types.CodeType | None
    _source: bytes | str  # bytes: the file's bytes, zlib-compressed; str: the text itself

    def __init__(self, state: FileState, text: str, code: object = None) -> None:
        self._set(state.path, state.mtime_ns, state.size, state.sha256, text, code)

    @classmethod
    def imported(cls, path: str, mtime_ns: int, data: bytes, sha256: str, code: types.CodeType | None, *,
                 packed: bytes | None = None) -> Baseline:
        """The baseline of a module just compiled from ``data``, the bytes of the file at ``path``.

        ``packed``: ``data`` already compressed (the ``packed`` of an earlier baseline of the same
        bytes, kept in hotfix's code cache), so that it is not compressed again.
        """
        self = cls.__new__(cls)
        self._set(path, mtime_ns, len(data), sha256, packed if packed is not None else zlib.compress(data, _LEVEL),
                  code)
        return self

    def _set(self, path: str, mtime_ns: int, size: int, sha256: str, source: bytes | str, code: object) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "path", path)
        setattr_(self, "mtime_ns", mtime_ns)
        setattr_(self, "size", size)
        setattr_(self, "sha256", sha256)
        setattr_(self, "_source", source)
        setattr_(self, "code", code_index(code) if isinstance(code, types.CodeType) else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Baseline is immutable (cannot set {name!r})")

    @property
    def state(self) -> FileState:
        """The file's state when it was read (path, mtime_ns, size, sha256)."""
        from ._source import FileState

        return FileState(path=self.path, mtime_ns=self.mtime_ns, size=self.size, sha256=self.sha256)

    @property
    def text(self) -> str:
        """The source text (decompressed and decoded on each access: keep it only as long as needed)."""
        source = self._source
        if isinstance(source, str):
            return source
        import importlib.util

        return importlib.util.decode_source(zlib.decompress(source))

    @property
    def packed(self) -> bytes:
        """The source compressed (what ``imported`` keeps; made on demand for a text baseline)."""
        source = self._source
        return source if isinstance(source, bytes) else zlib.compress(source.encode("utf-8", "surrogatepass"), _LEVEL)

    @property
    def kept_bytes(self) -> int:
        """Bytes of source kept (compressed bytes, or the text's length)."""
        return len(self._source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Baseline):
            return NotImplemented
        return (self.path, self.mtime_ns, self.size, self.sha256) == (other.path, other.mtime_ns, other.size, other.sha256)

    def __hash__(self) -> int:
        return hash((self.path, self.mtime_ns, self.size, self.sha256))

    def __repr__(self) -> str:
        return f"Baseline(path={self.path!r}, mtime_ns={self.mtime_ns}, size={self.size}, sha256={self.sha256!r})"
