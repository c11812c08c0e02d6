"""Every asyncio event loop that runs in a process started by ``hotfix run`` is a safepoints worker.

How: when ``asyncio.base_events`` (or ``uvloop``) is imported, the framework
hooks (``hotfix.integrations._hooks``) wrap the loop class's public
``run_forever`` so that the thread running it is registered with
``safepoints.asyncio_worker(loop)`` for as long as it runs. Every way of
running a loop goes through ``run_forever``: ``asyncio.run()``, ``Runner``,
``run_until_complete``, a loop in a background thread, uvicorn's server; in
CPython 3.11-3.13 ``run_until_complete`` calls ``self.run_forever()``, and so
does uvloop's (its ``Loop`` is a Python subclass whose attribute can be set).
No private asyncio name is touched and no event-loop policy is replaced, so a
service's own policy or ``loop_factory`` keeps working.

A registered loop parks *between* callbacks while a patch is swapped in (see
``safepoints/_asyncio.py``): no task step runs during the swap; a coroutine
that awaits across it continues in the new code, unless it runs inside an
async unit of work (an HTTP request under ``ASGIMiddleware``).

Limits: loops whose class does not derive from ``asyncio.BaseEventLoop`` or
``uvloop.Loop`` (another third-party loop) and loops that override
``run_forever`` without calling the base class's are not registered. A thread
that runs a second loop inside a running one (``nest_asyncio``) keeps only the
outer loop registered. ``--no-integrations`` (``HOTFIX_INTEGRATIONS=0``) and
the kill switch ``HOTFIX_DISABLED=1`` turn this off with the other hooks.
"""

from __future__ import annotations

import functools
import threading
import types
from typing import Any

import safepoints

_MARK = "_hotfix_registers_loop"


def _wrap_run_forever(cls: type) -> None:
    original = cls.run_forever  # type: ignore[attr-defined]
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def run_forever(self: Any) -> Any:
        registration = safepoints.asyncio_worker(self, name=f"asyncio loop ({threading.current_thread().name})")
        try:
            registration.__enter__()
        except Exception:  # e.g. running in another thread, or a loop inside a running loop: run as is
            return original(self)
        try:
            return original(self)
        finally:
            registration.__exit__(None, None, None)

    setattr(run_forever, _MARK, True)
    cls.run_forever = run_forever  # type: ignore[attr-defined]


def hook_asyncio(module: types.ModuleType) -> None:
    """Hook for ``asyncio.base_events``: every selector/proactor loop (``asyncio.run`` included)."""
    _wrap_run_forever(module.BaseEventLoop)


def hook_uvloop(module: types.ModuleType) -> None:
    """Hook for ``uvloop``: its ``Loop`` does not derive from ``BaseEventLoop``."""
    _wrap_run_forever(module.Loop)
