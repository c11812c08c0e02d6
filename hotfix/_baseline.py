"""Baselines: the exact source each module was imported from.

``install()`` puts a finder at the front of ``sys.meta_path``. It asks the
other finders for a spec and, when the answer is a plain ``.py`` source
loader, swaps in ``BaselineLoader``: the same loader, except that it reads
the file once (stat and bytes from one open file), records the baseline and
compiles *those bytes*. It never uses ``__pycache__``: a ``.pyc`` is trusted
by mtime and size, and an edit that keeps both would make the running code
differ from the recorded source. The cost is a compile per import after
``install()``; see the README's caveats.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
import types

from verification import Baseline, FileState, sha256_hex

_lock = threading.Lock()
_baselines: dict[str, Baseline] = {}


def get_baseline(name: str) -> Baseline | None:
    with _lock:
        return _baselines.get(name)


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
        code = self.source_to_code(data, path)  # raises SyntaxError like the normal loader
        text = importlib.util.decode_source(data)
        state = FileState(path=path, mtime_ns=st.st_mtime_ns, size=len(data), sha256=sha256_hex(data))
        set_baseline(fullname, Baseline(state=state, text=text, code=code))
        return code


class BaselineFinder:
    """Meta path finder wrapping the others; only plain source modules are touched."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - importlib protocol
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, BaselineFinder):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is None:
                continue
            if type(spec.loader) is importlib.machinery.SourceFileLoader:
                spec.loader = BaselineLoader(spec.loader.name, spec.loader.path)
            return spec
        return None

    def invalidate_caches(self) -> None:
        return None


def install() -> None:
    """Record a baseline for every module imported from a ``.py`` file from now on.

    Idempotent. Modules imported earlier still work: they are compared
    through their live code objects (see the README).
    """
    with _lock:
        if not any(isinstance(f, BaselineFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, BaselineFinder())


def installed() -> bool:
    return any(isinstance(f, BaselineFinder) for f in sys.meta_path)


def uninstall() -> None:
    """Stop recording baselines for new imports (existing baselines stay)."""
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, BaselineFinder)]
