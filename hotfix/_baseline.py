"""Baselines: the exact source each module was imported from.

``install()`` puts a finder at the front of ``sys.meta_path``. It asks the
other finders for a spec and, when the answer is a plain ``.py`` source
loader, swaps in ``BaselineLoader``: the same loader, except that it reads
the file once (stat and bytes from one open file), records the baseline and
compiles *those bytes*. It never uses ``__pycache__``: a ``.pyc`` is trusted
by mtime and size, and an edit that keeps both would make the running code
differ from the recorded source. Instead it keeps its own *code cache*:
compiled code stored with the key it was compiled for (sha256 of the source
bytes, the file's path, the interpreter's cache tag and optimisation
level), so it can never be stale the way a ``.pyc`` can; the sha256 is
computed anyway for the baseline, so checking the key costs nothing more.

* By default the entry lives beside Python's own: ``__pycache__/NAME.<tag>.hotfix``
  (``importlib.util.cache_from_source``, so ``sys.pycache_prefix`` is
  honoured), one file per module, overwritten when the content changes. It
  is written only when Python itself would write a ``.pyc``
  (``sys.dont_write_bytecode``), and read only when it is a regular file
  owned by this user or the source's owner and not writable by group or
  others: it is trusted no more than ``__pycache__`` already is, and
  validated more strictly (by content, not by mtime and size).
* ``code_cache=DIR``: one private directory instead (entries named by the
  key); it must belong to this user and be closed to others (loading code
  from a directory others can write is code injection), else it is refused.
* ``code_cache=False``: no cache; every import after ``install()`` compiles.

*Scope*: only modules of the application get a baseline (by default those
whose file is outside the standard library and site-packages; or the
dotted-name prefixes / directories given to ``install``; ``hotfix._scope``
decides). Everything else is left to the normal loader, ``.pyc`` and all,
so importing a framework after ``install()`` costs what it costs without it.
"""

from __future__ import annotations

import importlib.machinery
import logging
import marshal
import os
import stat
import sys
import threading
import types

from verification import Baseline, sha256_hex

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: install() imports only what it uses (SPEC 10)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._scope import Scope

_lock = threading.Lock()
_baselines: dict[str, Baseline] = {}
_BESIDE = "__pycache__"  # the default mode's name (a relative path is never accepted as a directory)
_code_cache: str | None = _BESIDE  # _BESIDE, a private directory, or None (off)
_log = logging.getLogger("hotfix")
_scope: Scope | None = None  # given to install(); None: not installed


def in_scope(spec: importlib.machinery.ModuleSpec, scope: Scope) -> bool:
    """Does this import get a baseline? (``hotfix._scope`` decides; a cheap test first.)"""
    from ._scope import system_prefixes

    if scope.application_code and (spec.origin or "").startswith(system_prefixes()):
        return False  # the common case for frameworks: no path resolution needed
    return scope.allows_spec(spec)


def current_scope() -> Scope | None:
    """The scope given to ``install`` (``None``: not installed)."""
    return _scope


# FBT001: the value of the public ``code_cache=`` option (False: off) passes through unchanged
def set_code_cache(directory: str | os.PathLike[str] | bool | None) -> None:  # noqa: FBT001
    """Where compiled code is cached: ``None``/``True`` beside the source (the default), ``False`` nowhere,
    or a private ``directory``.

    The directory is created 0700 if missing. Raises ``ValueError`` if it is
    not an absolute path to a directory owned by this user and closed to
    group and others.
    """
    global _code_cache
    if directory is None or directory is True:
        _code_cache = _BESIDE
        return
    if directory is False:
        _code_cache = None
        return
    path = os.fspath(directory)
    if not os.path.isabs(path):
        raise ValueError(f"code cache {path} must be an absolute path")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ValueError(f"code cache {path} must be a directory owned by uid {os.getuid()} "
                         "and not writable by group or others")
    _code_cache = path


def _cache_key(path: str, sha256: str) -> str:
    return sha256_hex(f"{path}\0{sha256}\0{sys.implementation.cache_tag}\0{sys.flags.optimize}".encode())


def _beside_file(path: str) -> str | None:
    """``__pycache__/NAME.<tag>.hotfix`` for the module at ``path`` (``None``: Python caches nothing here)."""
    from importlib.util import cache_from_source  # loaded by the first baselined import

    try:
        pyc = cache_from_source(path)
    except (NotImplementedError, ValueError):  # no cache tag: Python writes no .pyc either
        return None
    return pyc[: -len(".pyc")] + ".hotfix"


def _entry_file(path: str, key: str) -> str | None:
    directory = _code_cache
    if directory is None:
        return None
    if directory is _BESIDE:
        return _beside_file(path)
    return os.path.join(directory, key + ".code")


def _cached_code(cache_file: str | None, key: str,
                 source_uid: int) -> tuple[types.CodeType, bytes | None] | None:
    """``(code, packed source or None)`` from the entry if it was compiled for ``key``; else ``None``."""
    if cache_file is None:
        return None
    try:
        with open(cache_file, "rb") as fh:
            st = os.fstat(fh.fileno())
            if (not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.getuid(), source_uid)
                    or st.st_mode & 0o022):
                return None  # others could have written it: not code we load
            entry = marshal.loads(fh.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if isinstance(entry, types.CodeType) and _code_cache is not _BESIDE:  # written by an earlier version: keyed by name
        return entry, None
    if (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], types.CodeType)
            and isinstance(entry[1], bytes) and _code_cache is not _BESIDE):
        return entry[0], entry[1]
    if (isinstance(entry, tuple) and len(entry) == 3 and entry[0] == key
            and isinstance(entry[1], types.CodeType) and isinstance(entry[2], bytes)):
        return entry[1], entry[2]
    return None


def _store_code(cache_file: str | None, key: str, code: types.CodeType, packed: bytes) -> None:
    """Store the code with its key and the baseline's packed source: a cache hit skips compressing it too."""
    if cache_file is None or (_code_cache is _BESIDE and sys.dont_write_bytecode):
        return
    tmp = f"{cache_file}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        if _code_cache is _BESIDE:
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(marshal.dumps((key, code, packed)))
        os.replace(tmp, cache_file)  # atomic: readers see all of it or nothing
    except OSError as exc:
        _log.debug("code cache not written (%s)", exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def get_baseline(name: str) -> Baseline | None:
    with _lock:
        return _baselines.get(name)


def baselines() -> dict[str, Baseline]:
    """A snapshot of every recorded baseline, by module name."""
    with _lock:
        return dict(_baselines)


def set_baseline(name: str, baseline: Baseline | None) -> None:
    with _lock:
        if baseline is None:
            _baselines.pop(name, None)
        else:
            _baselines[name] = baseline


class BaselineLoader(importlib.machinery.SourceFileLoader):
    """A source loader that records what it compiled and always compiles source."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        sha = sha256_hex(data)
        key = _cache_key(path, sha)
        cache_file = _entry_file(path, key)
        cached = _cached_code(cache_file, key, st.st_uid)
        if cached is None:
            code = self.source_to_code(data, path)  # raises SyntaxError like the normal loader
            baseline = Baseline.imported(path, st.st_mtime_ns, data, sha, code)
            _store_code(cache_file, key, code, baseline.packed)
        else:
            code, packed = cached
            baseline = Baseline.imported(path, st.st_mtime_ns, data, sha, code, packed=packed)
        set_baseline(fullname, baseline)
        from . import _prebuild  # loaded by the first baselined import, not by install()

        _prebuild.enqueue(fullname, len(data))  # the running version's model, built in the background
        return code


class BaselineFinder:
    """Meta path finder wrapping the others; only plain source modules in scope are touched."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def find_spec(self, fullname: str, path=None, target=None):  # importlib protocol
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, BaselineFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is None:
                continue
            if type(spec.loader) is importlib.machinery.SourceFileLoader and in_scope(spec, self.scope):
                spec.loader = BaselineLoader(spec.loader.name, spec.loader.path)
            return spec
        return None

    def invalidate_caches(self) -> None:
        return None


def install(*, code_cache: str | os.PathLike[str] | bool | None = None, prefixes: Iterable[str] | None = None,
            roots: Iterable[str | os.PathLike[str]] | None = None) -> None:
    """Record a baseline for every application module imported from a ``.py`` file from now on.

    Scope: ``prefixes`` (dotted-name prefixes, ``"app"`` covers ``app.views``)
    and/or ``roots`` (directories); by default every module whose file is
    outside the standard library and site-packages. Modules out of scope
    import through the normal path (``.pyc``) and cannot be patched.

    ``code_cache``: where compiled code is cached by content, so imports
    after ``install()`` do not recompile unchanged files: by default beside
    the source in ``__pycache__`` (``NAME.<tag>.hotfix``, written when Python
    would write a ``.pyc``); a private directory; ``False``: nowhere (see the
    module docstring).

    Raises ``hotfix.UnsupportedInterpreter`` (nothing installed) on an
    interpreter that does not behave as hotfix assumes.

    Idempotent. Modules imported earlier still work: they are compared
    through their live code objects (see the README).
    """
    global _scope
    # not at the top: hotfix._scope reads baselines from here
    from ._interpreter import check
    from ._scope import Scope, system_directories

    check()  # refuse an interpreter that does not behave as hotfix assumes (hotfix._interpreter)

    system_directories()  # before the finder is in place (see hotfix._scope._installation_directories)

    if code_cache is not None:
        set_code_cache(code_cache)
    scope = Scope.of(prefixes, roots)
    with _lock:
        finders = [f for f in sys.meta_path if isinstance(f, BaselineFinder)]
        if finders:
            if prefixes is not None or roots is not None:
                for finder in finders:
                    finder.scope = scope
                _scope = scope
        else:
            _scope = scope
            sys.meta_path.insert(0, BaselineFinder(scope))


def installed() -> bool:
    return any(isinstance(f, BaselineFinder) for f in sys.meta_path)


def uninstall() -> None:
    """Stop recording baselines for new imports (existing baselines stay)."""
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, BaselineFinder)]
