"""Celery: each task is a unit of work, through Celery's own task signals."""

from __future__ import annotations

import threading
from typing import Any

from .._run import _process
from ._unit import UnitOfWork

_local = threading.local()
_connected = False


def _prerun(**_: Any) -> None:
    unit = UnitOfWork("celery task")
    unit.enter()
    stack = getattr(_local, "units", None)
    if stack is None:
        stack = _local.units = []
    stack.append(unit)


def _postrun(**_: Any) -> None:
    stack = getattr(_local, "units", None)
    if stack:
        stack.pop().exit()


def _child_ready(**_: Any) -> None:
    _process.set_role("worker", "celery")


def _main_ready(sender: Any = None, **_: Any) -> None:
    pool = getattr(sender, "pool_cls", None)
    name = getattr(pool, "__module__", "") or str(pool or "")
    # prefork: the main process forks the pool and runs no task itself
    _process.set_role("supervisor" if "prefork" in name else "worker", "celery")


def connect_celery() -> None:
    """Connect the task signals (``hotfix run`` does it when Celery is imported). Idempotent."""
    global _connected
    if _connected:
        return
    from celery import signals

    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.worker_process_init.connect(_child_ready, weak=False)
    signals.worker_init.connect(_main_ready, weak=False)
    _connected = True
