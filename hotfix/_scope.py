"""Which modules hotfix may touch, and which of them run code that differs from their file.

One answer for every trigger: the admin endpoint (allow checks and
``status``), the file watcher, the signal handler, and ``install()``'s
choice of which imports get a baseline. Before this module each trigger
had its own copy and they disagreed (the endpoint missed the user's and
the base interpreter's site-packages; the watcher and the signal handler
would touch hotfix itself when named by a prefix; the signal handler
scanned every module with a baseline, standard library included).

*Scope.* A module is in scope when its dotted name is under one of the
``prefixes`` (``"billing"`` covers ``billing`` and ``billing.rules``, not
``billing2``), or its source file is under one of the ``roots``. With
neither, the default is *application code*: a ``.py`` file outside the
standard library and every site-packages / dist-packages directory. hotfix,
safepoints and verification themselves and ``__main__`` are never in scope,
whatever the configuration: the patcher must not change under its own feet,
and ``__main__`` cannot be re-imported. The answer needs only a name and a
path, so it works from an import spec's origin before the module runs.

*Staleness.* A module is stale when the sha256 of its file differs from the
baseline it was imported from (or the file cannot be read). Hashing every
file on every ``status`` call would read the whole application each time,
so a file is hashed again only when its stat changed (mtime, size, ctime,
inode, device): ctime catches an edit that restored mtime and size, because
no user call can set it. Modules without a baseline (imported before
``install()``) have no recorded source to compare cheaply; they are not
listed here (a dry run compares their live code).

``install()`` imports this module: it uses no ``attrs`` (``Scope`` is a
plain frozen class; ``StaleModule`` comes from ``hotfix._stale`` when a
status first asks) and no ``sysconfig`` (the directories come from ``os``,
``sys`` and ``site``, already loaded).
"""

from __future__ import annotations

import functools
import os
import site
import sys
import threading
import types

from verification import sha256_hex

from ._baseline import get_baseline

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: install() imports only what it uses
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from ._stale import StaleModule

__all__ = [
    "NEVER_IN_SCOPE",
    "Scope",
    "StaleModule",
    "application_scope",
    "is_application_code",
    "normalize_prefixes",
    "real_path",
    "source_file",
    "stale_modules",
    "staleness",
    "system_directories",
]

#: Dotted names never in scope: hotfix's own packages and the main script.
NEVER_IN_SCOPE = ("hotfix", "safepoints", "verification", "__main__")
_NEVER_TOP_LEVEL = frozenset(NEVER_IN_SCOPE)  # all single names: a top-level package test is enough
SOURCE_SUFFIXES = (".py", ".pyw")
#: Directory names that hold installed distributions on every platform we know of.
_PACKAGE_DIR_NAMES = ("site-packages", "dist-packages")


# --------------------------------------------------------------------------- names and paths


def real_path(path: str | os.PathLike[str]) -> str:
    """The canonical form paths are compared in: symlinks resolved, case folded where the OS does."""
    return os.path.normcase(os.path.realpath(os.fspath(path)))


@functools.lru_cache(maxsize=1024)
def _real_directory(directory: str) -> str:
    return real_path(directory)


def real_file(path: str) -> str:
    """``real_path`` of a module file, with its directory's resolution cached (one ``lstat``, not one per
    path component: it runs in every import in scope)."""
    head, tail = os.path.split(path)
    joined = os.path.join(_real_directory(head), tail)
    return real_path(joined) if os.path.islink(joined) else os.path.normcase(joined)


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both canonical, see ``real_path``)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def normalize_prefixes(prefixes: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """A tuple of dotted prefixes without trailing dots; ``None`` stays ``None`` (no restriction)."""
    if prefixes is None:
        return None
    items = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"module prefixes must be strings, not {type(item).__name__}")
        stripped = item.strip().rstrip(".")
        if not stripped or not all(part.isidentifier() for part in stripped.split(".")):
            raise ValueError(f"{item!r} is not a dotted module prefix (like 'billing' or 'billing.rules')")
        out.append(stripped)
    return tuple(out)


def name_matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def never_in_scope(name: str) -> bool:
    """hotfix's own packages and ``__main__``."""
    return name.partition(".")[0] in _NEVER_TOP_LEVEL


def source_file(module: object) -> str | None:
    """The ``.py`` file a module (or an import spec) was loaded from, else ``None``.

    Built-in, frozen, extension, namespace and sourceless (``.pyc``) modules
    have none.
    """
    if isinstance(module, types.ModuleType):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) if spec is not None else getattr(module, "__file__", None)
    else:  # an importlib ModuleSpec (or anything with ``origin``)
        origin = getattr(module, "origin", None)
    if not isinstance(origin, str) or not origin.endswith(SOURCE_SUFFIXES):
        return None
    return origin


def system_directories() -> tuple[str, ...]:
    """The standard library and every site-packages directory (canonical paths).

    Both the running environment's and the base interpreter's (a virtualenv
    sees both), ``site.getsitepackages()``, the user site, and any
    ``site-packages``/``dist-packages`` entry on ``sys.path`` (Debian's
    system Python keeps distributions in ``dist-packages``).
    """
    return _system_directories(tuple(sys.path))


def system_prefixes() -> tuple[str, ...]:
    """``system_directories()``, each with a trailing separator: for a quick ``str.startswith``."""
    return _with_separator(system_directories())


@functools.lru_cache(maxsize=8)
def _with_separator(dirs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


@functools.cache
def _installation_directories() -> tuple[str, ...]:
    """The interpreter's own directories (computed once): the standard library, and the
    site-packages of the running environment and of the base interpreter (a virtualenv has both).

    What ``sysconfig.get_paths()`` names ``stdlib``/``purelib``/``platlib``, without importing
    ``sysconfig`` (and its ``_sysconfigdata_*``): the standard library is where ``os`` came from,
    and ``site`` computes the package directories of any prefix the same way the interpreter did
    (Debian's ``dist-packages`` included). tests/hotfix/test_import_weight.py checks that these
    cover what ``sysconfig`` reports.
    """
    dirs = {os.path.dirname(os.__file__)}
    getsitepackages = getattr(site, "getsitepackages", None)  # missing in some embedded builds
    if getsitepackages is not None:
        prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
        dirs.update(getsitepackages(sorted(prefixes)))
    return tuple(dirs)


@functools.lru_cache(maxsize=8)  # keyed by sys.path, which rarely changes
def _system_directories(search_path: tuple[str, ...]) -> tuple[str, ...]:
    dirs: set[str] = set(_installation_directories())
    getsitepackages = getattr(site, "getsitepackages", None)  # missing in some embedded builds
    if getsitepackages is not None:
        dirs.update(getsitepackages())
    getusersitepackages = getattr(site, "getusersitepackages", None)
    if getusersitepackages is not None:
        dirs.add(getusersitepackages())
    dirs.update(p for p in search_path if p and os.path.basename(p.rstrip(os.sep)) in _PACKAGE_DIR_NAMES)
    return tuple(sorted({real_path(d) for d in dirs if d}))


def is_system_file(path: str) -> bool:
    """Is ``path`` in the standard library or an installed package directory?"""
    return _is_system_file(path, system_directories())


@functools.lru_cache(maxsize=8192)  # one entry per module file; realpath costs a syscall per component
def _is_system_file(path: str, system_dirs: tuple[str, ...]) -> bool:
    real = real_file(path)
    return any(under(real, d) for d in system_dirs)


# --------------------------------------------------------------------------- scope


class Scope:
    """Which modules are in scope (see the module docstring).

    ``prefixes``: dotted-name prefixes; ``roots``: canonical directories (or
    files). A module matching either is in scope; with neither, application
    code is. Build one with ``Scope.of(prefixes, roots)``. Immutable, equal by
    value (a plain class, not ``attrs``: ``install()`` makes one).
    """

    __slots__ = ("prefixes", "roots")

    prefixes: tuple[str, ...] | None
    roots: tuple[str, ...] | None

    def __init__(self, prefixes: tuple[str, ...] | None = None, roots: tuple[str, ...] | None = None) -> None:
        object.__setattr__(self, "prefixes", prefixes)
        object.__setattr__(self, "roots", roots)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Scope is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return (self.prefixes, self.roots) == (other.prefixes, other.roots)

    def __hash__(self) -> int:
        return hash((self.prefixes, self.roots))

    def __repr__(self) -> str:
        return f"Scope(prefixes={self.prefixes!r}, roots={self.roots!r})"

    @classmethod
    def of(cls, prefixes: str | Iterable[str] | None = None,
           roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None) -> Scope:
        if isinstance(roots, str | os.PathLike):
            roots = (roots,)
        root_tuple = tuple(real_path(r) for r in roots) if roots is not None else None
        return cls(normalize_prefixes(prefixes), root_tuple)

    @property
    def application_code(self) -> bool:
        """No prefixes and no roots: the default, application code."""
        return self.prefixes is None and self.roots is None

    def allows(self, name: str, path: str | None) -> bool:
        """Is module ``name``, loaded (or about to be) from ``path``, in scope?"""
        return self._allows(name, path, None)

    def _allows(self, name: str, path: str | None, system_dirs: tuple[str, ...] | None) -> bool:
        if never_in_scope(name):
            return False
        if self.prefixes and name_matches(name, self.prefixes):
            return True
        if path is None or not path.endswith(SOURCE_SUFFIXES):
            return False
        if self.roots:
            real = real_file(path)
            if any(under(real, root) for root in self.roots):
                return True
        if not self.application_code:
            return False
        return not _is_system_file(path, system_dirs if system_dirs is not None else system_directories())

    def allows_module(self, name: str, module: object) -> bool:
        """For a loaded module (or ``None``: only a prefix can allow a module that is not loaded)."""
        return self.allows(name, source_file(module) if module is not None else None)

    def allows_spec(self, spec: object) -> bool:
        """For an import spec, before the module runs (``install()``: which imports get a baseline)."""
        name = getattr(spec, "name", None)
        return isinstance(name, str) and self.allows(name, source_file(spec))

    def modules(self) -> Iterator[tuple[str, types.ModuleType]]:
        """Loaded modules in scope, sorted by name."""
        system_dirs = system_directories()  # once per scan, not once per module
        for name, module in sorted(list(sys.modules.items()), key=lambda item: item[0]):
            if isinstance(module, types.ModuleType) and self._allows(name, source_file(module), system_dirs):
                yield name, module

    def describe(self) -> dict:
        return {"prefixes": list(self.prefixes) if self.prefixes is not None else None,
                "roots": list(self.roots) if self.roots is not None else None,
                "default_application_code": self.application_code}


_APPLICATION = Scope()


def application_scope() -> Scope:
    """The default scope: application code (not stdlib, not site-packages, never hotfix or ``__main__``)."""
    return _APPLICATION


def is_application_code(name: str, path: str | None) -> bool:
    """Is a module of this name, from this file, application code? Works before it is imported."""
    return _APPLICATION.allows(name, path)


# --------------------------------------------------------------------------- staleness


def __getattr__(name: str) -> Any:
    if name == "StaleModule":  # an attrs value object: loaded when a status first needs it
        from ._stale import StaleModule

        return StaleModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _DiskHashes:
    """sha256 of files, re-read only when the stat changed since the last read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, ...], str]] = {}

    def sha256(self, path: str) -> tuple[str, os.stat_result]:
        """``(sha256, stat)`` of the file now; raises ``OSError``."""
        st = os.stat(path)
        key = _stat_key(st)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1], st
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())  # the stat of what we read, not of a file renamed over it since
            digest = sha256_hex(fh.read())
        with self._lock:
            self._cache[path] = (_stat_key(st), digest)
        return digest, st

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_ino, st.st_dev)


_hashes = _DiskHashes()


def disk_sha256(path: str) -> str:
    """sha256 of a file as it is now (cached by stat). Raises ``OSError``."""
    return _hashes.sha256(path)[0]


def staleness(name: str) -> StaleModule | None:
    """``StaleModule`` if module ``name`` has a baseline that its file no longer matches, else ``None``.

    ``None`` too for a module without a baseline: there is nothing cheap to compare.
    """
    baseline = get_baseline(name)
    if baseline is None:
        return None
    try:
        digest, st = _hashes.sha256(baseline.path)
    except OSError as exc:
        from ._stale import StaleModule

        return StaleModule(name, baseline.path, baseline.sha256, None, problem=type(exc).__name__)
    if digest == baseline.sha256:
        return None
    from ._stale import StaleModule

    return StaleModule(name, baseline.path, baseline.sha256, digest, disk_mtime_ns=st.st_mtime_ns, disk_size=st.st_size)


def stale_modules(scope: Scope | None = None) -> list[StaleModule]:
    """Loaded modules in ``scope`` (default: application code) whose file differs from their baseline."""
    out = []
    for name, _module in (scope or _APPLICATION).modules():
        stale = staleness(name)
        if stale is not None:
            out.append(stale)
    return out
