"""Cooperative safepoints: park registered worker threads while code is swapped.

See ``safepoints/_core.py`` for the design notes and README section 5 for use.
"""

from ._asyncio import async_critical, asyncio_worker
from ._core import checkpoint, critical, current_pause_holder, idle, pause, statistics, worker
from ._exceptions import PauseTimeout
from ._records import HeldWorker, PauseInfo, Statistics, WorkerInfo

__all__ = [
    "HeldWorker",
    "PauseInfo",
    "PauseTimeout",
    "Statistics",
    "WorkerInfo",
    "async_critical",
    "asyncio_worker",
    "checkpoint",
    "critical",
    "current_pause_holder",
    "idle",
    "pause",
    "statistics",
    "worker",
]
