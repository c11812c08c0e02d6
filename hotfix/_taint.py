"""A patched process says so where engineers look after a crash (like the kernel's livepatch taint).

While at least one patch is in effect:

* unhandled exceptions (``sys.excepthook``, ``threading.excepthook``) are
  followed by one line naming the patches in effect, after whatever the
  previous hook printed (hooks installed earlier, e.g. by an error reporter,
  still run first and unchanged);
* when ``faulthandler`` is enabled, a line naming the patches is written to
  its stream at every change. ``faulthandler`` writes a fatal-error dump
  from C with no Python hook, so hotfix cannot add to the dump itself; the
  taint line precedes it in the same stream.

The hooks are installed at the first apply that leaves a patch in effect and
stay (they print nothing once every patch was rolled back). A hook installed
later by someone else replaces ours as usual; it will not name the patches.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
from typing import Any, TextIO

from ._metrics import patch_ids_in_effect

_lock = threading.Lock()
_installed = False
_previous_sys: Any = None
_previous_threading: Any = None


def taint_line() -> str | None:
    """``hotfix: TAINTED by live patches in effect: hf-1-3 (billing), ...`` or ``None``."""
    if "hotfix._transaction" not in sys.modules:
        return None
    from ._records import Patch
    from ._transaction import history

    ids = set(patch_ids_in_effect())
    if not ids:
        return None
    named = [f"{h.id} ({', '.join(h.modules)})" for h in history() if isinstance(h, Patch) and h.id in ids]
    return f"hotfix: TAINTED by live patches in effect: {', '.join(named)}"


def _write(stream: TextIO | None, line: str) -> None:
    if stream is None:
        return
    try:
        stream.write(line + "\n")
        stream.flush()
    except Exception:  # crash output must never raise from the hook
        pass


def _sys_hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    (_previous_sys or sys.__excepthook__)(exc_type, exc, tb)
    line = taint_line()
    if line:
        _write(sys.stderr, line)


def _threading_hook(args: Any) -> None:
    (_previous_threading or threading.__excepthook__)(args)
    line = taint_line()
    if line:
        _write(sys.stderr, line)


def patches_changed() -> None:
    """Called when a patch was applied or rolled back: install the hooks once, mark faulthandler's stream."""
    global _installed, _previous_sys, _previous_threading
    line = taint_line()
    with _lock:
        if line and not _installed:
            _installed = True
            _previous_sys, sys.excepthook = sys.excepthook, _sys_hook
            _previous_threading, threading.excepthook = threading.excepthook, _threading_hook
    if _installed and faulthandler.is_enabled():
        # faulthandler keeps its own file descriptor; without a way to read it, its usual stream is stderr.
        _write(sys.stderr, line or "hotfix: no live patch in effect any more (all rolled back)")


def uninstall() -> None:
    """Restore the hooks found at install time (tests), if ours are still in place."""
    global _installed
    with _lock:
        if not _installed:
            return
        if sys.excepthook is _sys_hook:
            sys.excepthook = _previous_sys
        if threading.excepthook is _threading_hook:
            threading.excepthook = _previous_threading
        _installed = False
