"""hotfix: patch a running Python process in place, safely.

Verify the file on disk, park workers at safepoints, swap definitions in
place (identities kept), watch a probation window, roll back by itself.
"""

from ._baseline import install, installed, uninstall
from ._exceptions import HotfixError, PatchRejected, PatchRolledBack, RollbackIncomplete
from ._outcomes import PatchStatus, Reason, State
from ._records import Patch, Rollback, SwapEvent
from ._signal import SignalHandle, install_signal_handler, stale_modules
from ._transaction import apply, configure, dry_run, history, rollback
from ._watch import Watcher, WatchEvent, watch

__all__ = [
    "HotfixError",
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
