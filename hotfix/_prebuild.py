"""The running version's model, built in the background after import.

The first dry run (or apply) of a module needs the running version as a
*model* (its source parsed into definitions; see ``verification``). Parsing
a large file costs more than compiling it, so doing it on the first patch
makes that patch slower than ``importlib.reload``. Later patches reuse it.

So after the imports settle, one daemon thread builds the models of the
application's baselined modules, at low priority:

* it starts only after ``QUIET`` seconds without a new import (startup
  first), and handles one module at a time, oldest import first;
* it parses a few hundred lines at a time (``verification`` cuts the text
  at top-level definitions, using the code index kept at import, so it is
  never re-compiled), and after each piece sleeps as long as the piece
  took: it never takes more than about half of the GIL, and a worker
  waiting for the GIL gets it between pieces. (It leaves the switch
  interval alone: a background thread must not change the process's
  scheduling for long; ``hotfix._latency`` lowers it only during a patch
  or a dry run.)
* only modules with a baseline, that is the modules in ``install()``'s
  scope (application code by default, see ``hotfix._scope``), of at least
  ``MIN_SOURCE`` bytes (a smaller one parses in a few ms), and at most
  ``SOURCE_BUDGET`` bytes of source in all (a model weighs ~100x its text;
  the model cache is bounded too, see ``verification``);
* a module whose baseline changed meanwhile (patched, re-imported) is
  skipped; one whose model is already cached (a dry run got there first)
  costs nothing. Errors are logged at debug level and never raised.

After ``fork()`` the thread does not exist in the child: the child's next
baselined import starts it again, and it then also builds what was still
queued. ``ENABLED = False`` turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import types

ENABLED = True
#: Seconds without a new import before building starts.
QUIET = 0.5
#: Source bytes whose models are built in all (about 100x that in memory).
SOURCE_BUDGET = 320 * 1024
#: Smaller modules are left alone: parsing them on the first patch costs a few milliseconds at most.
MIN_SOURCE = 16 * 1024

_log = logging.getLogger("hotfix")
_cond = threading.Condition()
_queue: dict[str, None] = {}  # module names, oldest import first
_last_import = 0.0
_thread: threading.Thread | None = None
_spent = 0
_busy = False
_built: list[str] = []  # names of modules whose model this thread built (for tests and benchmarks)


def enqueue(name: str, size: int | None = None) -> None:
    """A module of ``size`` source bytes was just imported with a baseline: build its model later.

    Cheap, since it runs inside every import in scope: a module under ``MIN_SOURCE`` is not queued
    at all, and the thread is woken only when the queue was empty (otherwise it is waiting for the
    imports to settle and looks at ``_last_import`` again when its wait ends).
    """
    global _last_import, _thread
    if not ENABLED or (size is not None and size < MIN_SOURCE):
        return
    with _cond:
        was_empty = not _queue
        _queue[name] = None
        _last_import = time.monotonic()
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="hotfix-prebuild", daemon=True)
            _thread.start()
        elif was_empty:
            _cond.notify_all()


def wait_idle(timeout: float) -> bool:
    """Wait until nothing is queued or being built (tests, benchmarks); False on timeout."""
    deadline = time.monotonic() + timeout
    with _cond:
        while _queue or _busy:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _cond.wait(left)
    return True


def built() -> list[str]:
    """Modules whose running model the background thread built, in order."""
    with _cond:
        return list(_built)


def _run() -> None:
    global _busy
    while True:
        with _cond:
            while not _queue:
                _cond.wait()
            while (wait := _last_import + QUIET - time.monotonic()) > 0:
                _cond.wait(wait)
            name = next(iter(_queue))
            del _queue[name]
            _busy = True
        try:
            _build(name)
        except Exception:  # a background nicety must never disturb the service
            _log.debug("prebuild of %s failed", name, exc_info=True)
        finally:
            with _cond:
                _busy = False
                _cond.notify_all()


def _build(name: str) -> None:
    global _spent
    from ._baseline import get_baseline  # _baseline calls enqueue(): import here, not at the top

    baseline = get_baseline(name)
    if baseline is None or not isinstance(baseline.code, types.CodeType):
        return
    if baseline.size < MIN_SOURCE or _spent + baseline.size > SOURCE_BUDGET:
        return
    # the parser: loaded here, not by the first import
    from verification import prebuild_model, yielding

    with yielding(_give_way()):
        if get_baseline(name) is not baseline:
            return
        done = prebuild_model(baseline.text, baseline.path, baseline.sha256, baseline.code)
    if done:
        with _cond:
            _spent += baseline.size
            _built.append(name)


#: Work at least this long between two sleeps (verification's give-way points come every few us).
_PIECE = 0.0003


def _give_way():  # a callback factory
    """At give-way points, once a piece of work is done: sleep as long as it took (at most half the GIL for us)."""
    mark = [time.perf_counter()]

    def between() -> None:
        worked = time.perf_counter() - mark[0]
        if worked < _PIECE:
            return
        time.sleep(max(worked, 0.0005))
        mark[0] = time.perf_counter()

    return between


def _after_fork_in_child() -> None:
    global _cond, _thread, _busy
    _cond = threading.Condition()  # the parent's may have been held by its thread at fork time
    _thread = None  # started again by the child's next import (no thread is started inside a fork handler)
    _busy = False


os.register_at_fork(after_in_child=_after_fork_in_child)
