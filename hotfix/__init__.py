"""hotfix: patch a running Python process in place, safely.

Verify the file on disk, park workers at safepoints, swap definitions in
place (identities kept), watch a probation window, roll back by itself.

Only ``install`` is imported eagerly: the rest loads on first use, so
``import hotfix; hotfix.install()`` at the top of a service costs little and
pulls in no file watcher, asyncio, ssl, subprocess, HTTP server, ``attrs``
or ``typing`` (tests/hotfix/test_import_weight.py pins what it imports).
"""

import importlib as _importlib

from ._baseline import install, installed, uninstall
from ._version import __version__ as __version__

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs more than hotfix
if TYPE_CHECKING:  # the names below load lazily through __getattr__
    from typing import Any

    from ._exceptions import HotfixError, PatchRejected, PatchRolledBack, RollbackIncomplete
    from ._interpreter import UnsupportedInterpreter
    from ._jsonlog import JSONFormatter
    from ._outcomes import PatchStatus, Reason, State
    from ._records import Patch, Rollback, SwapEvent
    from ._signal import SignalHandle, install_signal_handler, stale_modules
    from ._transaction import apply, configure, dry_run, history, rollback
    from ._watch import Watcher, WatchEvent, watch
del TYPE_CHECKING

#: public name -> private module that defines it
_LAZY = {
    "HotfixError": "_exceptions", "PatchRejected": "_exceptions", "PatchRolledBack": "_exceptions",
    "RollbackIncomplete": "_exceptions", "UnsupportedInterpreter": "_interpreter",
    "JSONFormatter": "_jsonlog",
    "PatchStatus": "_outcomes", "Reason": "_outcomes", "State": "_outcomes",
    "Patch": "_records", "Rollback": "_records", "SwapEvent": "_records",
    "SignalHandle": "_signal", "install_signal_handler": "_signal", "stale_modules": "_signal",
    "apply": "_transaction", "configure": "_transaction", "dry_run": "_transaction", "history": "_transaction",
    "rollback": "_transaction",
    "Watcher": "_watch", "WatchEvent": "_watch", "watch": "_watch",
}


def __getattr__(name: str) -> "Any":
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hotfix' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "HotfixError",
    "JSONFormatter",
    "Patch",
    "PatchRejected",
    "PatchRolledBack",
    "PatchStatus",
    "Reason",
    "Rollback",
    "RollbackIncomplete",
    "SignalHandle",
    "State",
    "SwapEvent",
    "UnsupportedInterpreter",
    "WatchEvent",
    "Watcher",
    "apply",
    "configure",
    "dry_run",
    "history",
    "install",
    "install_signal_handler",
    "installed",
    "rollback",
    "stale_modules",
    "uninstall",
    "watch",
]
