"""Cooperative safepoints for CPython threads.

Design notes
============

The problem
-----------
hotfix swaps code in a running process: a function keeps its identity and
receives a new ``__code__``, classes get methods replaced, several modules
change as one unit. If other threads keep running while that happens, a
thread can see part of the old version and part of the new one: it calls the
new ``f`` from the old ``g``, reads a module global the patch has already
migrated but a class attribute it has not, or runs half a job under one
version and half under the other. That is torn behaviour, and it is worse
than either version alone. The patch must happen while every thread that
runs service code is stopped at a point where it holds no half-done work.

What does not work in CPython
-----------------------------
* There is no API to suspend another thread. ``PyThreadState`` offers no
  "stop here", and stopping an OS thread from outside (``pthread_kill``,
  ``SuspendThread``) can freeze it while it holds the GIL, the allocator or
  any lock, and certainly in the middle of a job.
* Signals only reach the main thread: a Python-level signal handler runs in
  the main thread, between bytecodes, wherever that thread happens to be.
  It cannot stop other threads, and "wherever it happens to be" is exactly
  the torn state we want to avoid.
* ``sys.settrace``/``sys.setprofile``/``sys.monitoring`` could stop a thread
  at its next line or call, but they are per-thread (``threading.settrace``
  only affects threads started later) and slow the whole process down for
  the entire time they are installed; the stop point is still arbitrary.
* ``sys.setswitchinterval`` and the GIL decide *when* a thread runs, never
  *where* it stops; and free-threaded builds have no GIL at all.

The choice: cooperative safepoints
----------------------------------
Threads opt in. A thread registers as a *worker* (``worker()``) and marks
the places where it holds no half-done work: ``checkpoint()`` between jobs,
``idle()`` around blocking waits, ``critical()`` around a section that must
not be split by a pause. A pauser sets one module-global flag, ``_pending``,
and waits on a condition variable until every registered worker (except
itself) has *acknowledged*: it is parked in a checkpoint, or inside an
``idle()`` block (and will park when it leaves the block). When the pauser
is done it clears the flag and wakes everyone.

Waking is not running: each woken thread needs the GIL, and a releasing
thread that goes on computing gives the GIL up only once per switch
interval (5 ms by default). So after a release that resumed parked threads
the releasing thread *hands over*: it sleeps about one GIL hand-off per
resumed thread (``_HAND_OVER_EACH``, at most ``_HAND_OVER_MAX``, 1 ms), and
the resumed threads run first. The resumed threads still take the GIL one
after the other, and each re-acquires ``_lock`` on its way out of the wait
(``Condition.wait``). Measured with 64 parked threads on a loaded 2-core
box, the last one runs ~2.3 ms after ``notify_all``, against ~2.1 ms when
each waits on a bare lock that the release opens and each passes on (no
``_lock`` to re-acquire): the serial part is the GIL hand-offs themselves
(~30 us each), not the lock, so the simpler condition stays. Nothing here
changes what a pause guarantees; it only orders who runs first afterwards.
(A free-threaded build without a GIL skips the hand-over.)

``checkpoint()`` with no pause pending is one global load and a return:
``if _pending: _checkpoint_slow()``. No lock, no thread-local lookup; it
costs about as much as calling an empty function, so it can sit inside a
hot loop. Everything else (registration, idle and critical transitions,
parking, the pause itself) goes through one lock (``_lock``, an RLock so a
signal handler in a thread that holds it cannot deadlock) with three
conditions: ``_resume`` (parked workers wait for the pause to end),
``_progress`` (the pauser waits for the late workers to acknowledge) and
``_free`` (other would-be pausers wait for the current pause to end).
Per-thread state lives in a dict keyed by thread ident, not in a
thread-local, because the pauser must inspect everyone.

The pauser does not trust the unlocked fast-path read at all: a worker only
counts as stopped once it has said so under the lock (parked, or entered
``idle()``), and every transition out of a stopped state (leaving
``idle()``, entering ``critical()``, registering) re-checks the flag under
the lock and parks instead. So a worker that read ``_pending`` a moment
before it was set merely runs one more job before it parks.

Registered threads that die without unregistering (the ``with worker()``
block was never exited) are detected with ``Thread.is_alive()`` (or, for
threads not started by ``threading``, by their ident disappearing from
``sys._current_frames()``) and dropped: at the start of every pause, in
``statistics()``, and every ``_POLL`` seconds while a pause waits.

A pause whose holder thread exits without ending it is released by the
parked threads and waiting pausers, which check every ``_HOLDER_CHECK``
seconds.

A pause from a worker itself works: the pause holder is never waited for.
A worker blocked in ``pause()`` waiting for another thread's pause counts as
parked (unless it is inside ``critical()``), so two workers pausing at once
cannot deadlock each other.

asyncio: an event loop thread registers with ``asyncio_worker()`` (see
``_asyncio.py``); when a pause starts, the pauser schedules ``checkpoint``
on each such loop with ``call_soon_threadsafe``. That wakes a loop blocked
in ``select()`` and the loop parks inside that callback, i.e. between
callbacks: the callback running when the pause starts (and any already in
the ready queue) finishes first, and none runs while the pause is held.
Async units of work (``async_critical()``) count per loop thread in
``_Worker.units``: while any is in flight the thread is not at a safepoint
and never parks (checked wherever ``critical`` is), so the loop runs them
to the end; units entered during a pause await a future that releasing the
pause resolves (section "async units of work" below, notes in
``_asyncio.py``).

Limits
------
* A worker that never checkpoints (a long computation, a blocking call not
  wrapped in ``idle()``, a long ``critical()`` block, a C extension call that
  does not return) makes ``pause()`` time out with ``PauseTimeout`` naming
  the thread and the ``file:line`` it is executing; nobody is left parked.
* Unregistered threads are not stopped at all. They keep running during the
  pause; ``checkpoint()``/``idle()``/``critical()`` are no-ops for them.
* A parked thread is parked wherever it called ``checkpoint()``; the frames
  on its stack (e.g. its own loop function) keep running old code until they
  return. Safepoints only guarantees that it is not executing while the swap
  happens.
* ``critical()`` and the registration are per thread. On an asyncio loop a
  ``critical()`` block that spans an ``await`` covers every task of that
  loop until it ends.
* Free-threaded CPython (3.13t): the fast path stays a plain, lock-free read
  of a module global holding ``True``/``False`` (an object reference, never
  torn). What changes is that without the GIL a worker really runs in
  parallel with the pauser and may observe the flag a little later; this is
  harmless because the pause is only complete once every worker has
  acknowledged under the lock, and all state a pauser relies on is written
  under that lock (only nested ``critical()`` depth changes, which never
  change whether a thread is at a safepoint, skip it). Unregistered threads,
  however, truly run concurrently with the swap instead of merely
  interleaving with it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from ._exceptions import PauseTimeout
from ._records import HeldWorker, PauseInfo, Statistics, WorkerInfo

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "checkpoint",
    "critical",
    "current_pause_holder",
    "idle",
    "pause",
    "statistics",
    "worker",
]

_get_ident = threading.get_ident
_now = time.perf_counter
_sleep = time.sleep

#: Fast-path flag: True while a pause is requested or held. Only written under ``_lock``.
_pending: bool = False

_lock = threading.RLock()
_resume = threading.Condition(_lock)  # parked workers wait here for the pause to end
_progress = threading.Condition(_lock)  # the pauser waits here for late workers
_free = threading.Condition(_lock)  # would-be pausers wait here for the holder to release

_workers: dict[int, _Worker] = {}
_holder: int | None = None  # ident of the thread holding (or acquiring) the pause
_holder_depth = 0
_holder_thread: threading.Thread | None = None  # to notice a holder that died holding the pause
_late: set[int] = set()  # idents the pauser is waiting for; emptied -> notify _progress
_waited: set[int] = set()  # idents the current pause had to wait for (PauseInfo.held, how="waited")
_arrived: list[_Worker] = []  # workers that registered during the current pause (how="arrived")

#: While a pause waits, how often it re-checks for workers whose thread died.
_POLL = 0.01
#: How often parked threads and waiting pausers check that the pause holder is alive.
_HOLDER_CHECK = 0.5
#: After a release the releasing thread sleeps this long per resumed parked thread, at most _HAND_OVER_MAX.
_HAND_OVER_EACH = 20e-6
_HAND_OVER_MAX = 0.001
#: Threads take turns on a GIL (False on a free-threaded build running without one).
_GIL: bool = getattr(sys, "_is_gil_enabled", lambda: True)()

_pauses = 0
_pause_timeouts = 0
_last_stall: float | None = None
_max_stall: float | None = None

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB_DIRS = tuple({os.path.join(sysconfig.get_paths()[k], "") for k in ("stdlib", "platstdlib")})
_DummyThread: type | None = getattr(threading, "_DummyThread", None)


class _Worker:
    """Mutable per-thread state; guarded by ``_lock`` (see the module notes)."""

    __slots__ = (
        "critical",
        "depth",
        "ident",
        "idle",
        "loop",
        "loop_depth",
        "name",
        "native_id",
        "parked",
        "thread",
        "unit",
        "units",
    )

    def __init__(self, name: str, thread: threading.Thread, ident: int, *, unit: bool = False) -> None:
        self.name = name
        self.unit = unit
        self.thread = thread
        self.ident = ident
        self.native_id: int | None = getattr(thread, "native_id", None)
        self.depth = 1
        self.idle = 0
        self.critical = 0
        self.parked = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_depth = 0  # loop registrations: asyncio_worker() blocks and counted async units
        self.units = 0  # async units of work in flight on ``loop`` (see "async units of work")

    def safe(self) -> bool:
        return self.parked or (self.idle > 0 and self.critical == 0 and self.units == 0)

    def state(self) -> str:
        if self.parked:
            return "parked"
        if self.critical or self.units:
            return "critical"
        if self.idle:
            return "idle"
        return "running"


# --------------------------------------------------------------------------- checkpoint


def checkpoint() -> None:
    """A safepoint: park here while a pause is pending, else return at once.

    Call it between units of work in a registered worker. With no pause
    pending it costs about as much as an empty function call. From an
    unregistered thread, the thread holding the pause, or inside a
    ``critical()`` block it never parks.
    """
    if _pending:
        _checkpoint_slow()


def _checkpoint_slow() -> None:
    ident = _get_ident()
    w = _workers.get(ident)
    if w is None:
        return
    with _lock:
        if _pending and _holder != ident and not w.critical and not w.parked and not w.units:
            _park_locked(w)


def _park_locked(w: _Worker) -> None:
    """Block the calling worker until no pause is pending. Caller holds ``_lock``."""
    w.parked = True
    _acknowledge_locked(w.ident)
    try:
        while _pending:
            if not _resume.wait(_HOLDER_CHECK):
                _drop_dead_holder_locked()
    finally:
        w.parked = False


def _acknowledge_locked(ident: int) -> None:
    """``ident`` reached a safepoint (or left): wake the pauser if it was the last one."""
    if ident in _late:
        _late.discard(ident)
        if not _late:
            _progress.notify_all()


# --------------------------------------------------------------------------- registration


def _register(name: str | None, loop: asyncio.AbstractEventLoop | None = None, *, unit: bool = False) -> int:
    ident = _get_ident()
    thread = threading.current_thread()
    with _lock:
        w = _workers.get(ident)
        if w is not None and w.thread is not thread:  # a dead thread's ident was reused
            del _workers[ident]
            w = None
        if w is None:
            w = _Worker(name if name is not None else thread.name, thread, ident, unit=unit)
            _workers[ident] = w
            new = True
        else:
            w.depth += 1
            new = False
        if loop is not None:
            if w.loop is not None and w.loop is not loop:
                _undo_register_locked(w)
                raise RuntimeError("this thread is already registered with a different event loop")
            w.loop = loop
            w.loop_depth += 1
        if new and _pending and _holder != ident:
            _arrived.append(w)
            _park_locked(w)  # registering during a pause: start out parked
    return ident


def _undo_register_locked(w: _Worker) -> None:
    w.depth -= 1
    if w.depth <= 0:
        del _workers[w.ident]


def _unregister(ident: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
    if _get_ident() != ident:
        raise RuntimeError("a safepoints worker block must be exited by the thread that entered it")
    with _lock:
        w = _workers.get(ident)
        if w is None:
            return
        if loop is not None and w.loop is not loop:
            return  # dropped when its loop was found closed (_drop_closed_loops_locked)
        if loop is not None:
            w.loop_depth -= 1
            if w.loop_depth <= 0:
                w.loop = None
                w.loop_depth = 0
        w.depth -= 1
        if w.depth <= 0:
            del _workers[ident]
            _acknowledge_locked(ident)


class _WorkerBlock(AbstractContextManager[None]):
    __slots__ = ("_ident", "_name", "_unit")

    def __init__(self, name: str | None, *, unit: bool) -> None:
        self._name = name
        self._unit = unit
        self._ident: int | None = None

    def __enter__(self) -> None:
        if self._ident is not None:
            raise RuntimeError("this worker() block is already entered; call worker() again")
        self._ident = _register(self._name, unit=self._unit)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ident = self._ident
        if ident is None:
            return
        if _get_ident() != ident:
            raise RuntimeError("a worker() block must be exited by the thread that entered it")
        self._ident = None
        _unregister(ident)


def worker(name: str | None = None, *, unit: bool = False) -> AbstractContextManager[None]:
    """Register the calling thread as a managed worker for the duration of the block.

    ``name`` defaults to the thread's name. ``unit=True`` marks a registration
    that lasts one unit of work (a request, a task), so that a pause's
    ``held`` tells units from long-lived workers. Reentrant: a nested ``worker()``
    in the same thread only increments a depth (the inner name and ``unit`` are ignored),
    and the thread is unregistered when the outermost block exits. Entered
    while a pause is pending, it parks until the pause ends. A thread that
    dies while registered is detected and dropped, it never blocks a pause.
    """
    return _WorkerBlock(name, unit=unit)


# --------------------------------------------------------------------------- idle / critical


class _IdleBlock(AbstractContextManager[None]):
    __slots__ = ("_w",)

    def __init__(self) -> None:
        self._w: _Worker | None = None

    def __enter__(self) -> None:
        ident = _get_ident()
        w = _workers.get(ident)
        if w is None:
            return
        self._w = w
        with _lock:
            w.idle += 1
            if _pending and w.critical == 0 and w.units == 0:
                _acknowledge_locked(ident)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        w, self._w = self._w, None
        if w is None:
            return
        with _lock:
            w.idle -= 1
            if _pending and w.idle == 0 and w.critical == 0 and not w.units and _holder != w.ident:
                _park_locked(w)


def idle() -> AbstractContextManager[None]:
    """Mark a blocking wait: while inside, the worker counts as parked.

    A pause does not wait for a worker inside ``idle()``. When the block
    exits while a pause is pending, the thread parks until the pause ends
    before continuing. Use it around ``queue.get()``, socket reads, sleeps:
    anything that waits without touching code that may be patched. Nestable;
    a no-op in unregistered threads. Inside ``critical()`` it does not make
    the thread count as parked.
    """
    return _IdleBlock()


class _CriticalBlock(AbstractContextManager[None]):
    __slots__ = ("_w",)

    def __init__(self) -> None:
        self._w: _Worker | None = None

    def __enter__(self) -> None:
        ident = _get_ident()
        w = _workers.get(ident)
        if w is None:
            return
        self._w = w
        if w.critical:  # nested: the thread is already not at a safepoint
            w.critical += 1
            return
        with _lock:
            if _pending and _holder != ident and not w.parked and not w.units:
                _park_locked(w)
            w.critical = 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        w, self._w = self._w, None
        if w is None:
            return
        if w.critical > 1:
            w.critical -= 1
            return
        with _lock:
            w.critical = 0
            if _pending and _holder != w.ident and not w.units:  # with units: parks when they end
                if w.idle:
                    _acknowledge_locked(w.ident)
                else:
                    _park_locked(w)


def critical() -> AbstractContextManager[None]:
    """A section a pause must not split: a pause waits until the block ends.

    Entered while a pause is pending, the thread first parks until the pause
    ends; leaving the block is a safepoint (the thread parks there if a pause
    is waiting). Reentrant; a no-op in unregistered threads. Keep it short: a
    pause can only wait ``timeout`` seconds for it.
    """
    return _CriticalBlock()


# --------------------------------------------------------------------------- pause


class _PauseBlock(AbstractContextManager[PauseInfo]):
    __slots__ = ("_ident", "_info", "_started", "_timeout", "_unit")

    def __init__(self, timeout: float) -> None:
        self._timeout = float(timeout)
        self._info: PauseInfo | None = None
        self._ident: int | None = None
        self._started = 0.0
        self._unit: _Unit | None = None

    def __enter__(self) -> PauseInfo:
        if self._info is not None:
            raise RuntimeError("this pause() block is already entered; call pause() again")
        self._ident = _get_ident()
        self._unit = _leave_own_unit()  # a pause never waits for the async unit it runs in
        try:
            self._info, self._started = _acquire(self._ident, self._timeout)
        except BaseException:
            unit, self._unit = self._unit, None
            _rejoin_own_unit(unit)
            raise
        return self._info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        info, self._info = self._info, None
        unit, self._unit = self._unit, None
        try:
            if info is not None and self._ident is not None:
                _release(self._ident, info, self._started)
        finally:
            _rejoin_own_unit(unit)


def pause(timeout: float = 1.0) -> AbstractContextManager[PauseInfo]:
    """Hold every registered worker (except the caller) at a safepoint for the block.

    On entry, asks all registered workers to park and returns once each is
    parked, idle, or gone; yields a :class:`PauseInfo` (``acquire_seconds``
    now, ``stall_seconds`` once the block has exited). Raises
    :class:`PauseTimeout` if that takes longer than ``timeout`` seconds, after
    releasing everyone. One pause at a time per process: a nested pause in
    the holding thread is a no-op, a pause from another thread waits (within
    the same timeout) for the current one to end. May be called from a
    worker; that worker counts as parked meanwhile.
    """
    if timeout != timeout or timeout < 0:  # NaN or negative
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    return _PauseBlock(timeout)


def _acquire(ident: int, timeout: float) -> tuple[PauseInfo, float]:
    global _pending, _holder, _holder_depth, _holder_thread, _pause_timeouts
    t0 = _now()
    deadline = t0 + timeout
    with _lock:
        if _holder == ident:
            _holder_depth += 1
            return PauseInfo(
                acquire_seconds=0.0, workers=_held_count_locked(ident), nested=True,
                held=_held_locked(ident),
            ), t0
        if _holder is not None:
            _wait_for_holder_locked(ident, deadline, timeout)
        _holder = ident
        _holder_depth = 1
        _holder_thread = threading.current_thread()
        _pending = True
        _waited.clear()
        _arrived.clear()
        _units_waited_locked(ident)
        requested = _now()
        try:
            held = _wait_for_workers_locked(ident, deadline, timeout)
        except BaseException as e:
            if isinstance(e, PauseTimeout):
                _pause_timeouts += 1
            _release_locked()
            raise
        return PauseInfo(acquire_seconds=_now() - t0, workers=held,
                         held=_held_locked(ident) + _unit_records_locked(first=True)), requested


def _wait_for_holder_locked(ident: int, deadline: float, timeout: float) -> None:
    global _pause_timeouts
    me = _workers.get(ident)
    if me is not None and (me.critical or me.units):
        me = None  # inside critical() it is not at a safepoint: one of the pauses will time out
    if me is not None:  # a worker waiting for a pause is at a safepoint
        me.parked = True
        _acknowledge_locked(ident)
    try:
        while _holder is not None:
            if _drop_dead_holder_locked():
                break
            remaining = deadline - _now()
            if remaining <= 0:
                _pause_timeouts += 1
                holder = _holder
                raise PauseTimeout(
                    f"safepoints.pause() timed out after {timeout:g}s waiting for the pause "
                    f"held by {_thread_label(holder)} to end; only one pause runs at a time: "
                    "retry later or use a longer timeout.",
                    holder=holder,
                )
            _free.wait(min(remaining, _HOLDER_CHECK))
    finally:
        if me is not None:
            me.parked = False


def _wait_for_workers_locked(ident: int, deadline: float, timeout: float) -> int:
    kicked = False
    while True:
        _reap_locked()
        late = [w for i, w in _workers.items() if i != ident and not w.safe()]
        if not late:
            _late.clear()
            return _held_count_locked(ident)
        if not kicked:
            kicked = True
            for w in late:
                if w.loop is not None:  # make the loop park between two callbacks
                    try:
                        w.loop.call_soon_threadsafe(checkpoint)
                    except RuntimeError:  # loop closed; its thread is late or dead
                        pass
        _late.clear()
        _late.update(w.ident for w in late)
        _waited.update(_late)
        remaining = deadline - _now()
        if remaining <= 0:
            frames = sys._current_frames()
            try:
                infos = tuple(_info(w, frames) for w in late)
                callers = [_caller_where(frames.get(w.ident)) for w in late]
            finally:
                del frames
            raise PauseTimeout(_timeout_message(infos, callers, timeout), late=infos)
        _progress.wait(min(remaining, _POLL))


def _release(ident: int, info: PauseInfo, started: float) -> None:
    global _holder_depth, _pauses, _last_stall, _max_stall
    with _lock:
        if info.nested:
            if _holder == ident and _holder_depth > 1:
                _holder_depth -= 1
            info.stall_seconds = _now() - started
            return
        if _holder != ident:  # already released (should not happen)
            return
        arrived = tuple(_held_worker(w) for w in _arrived if all(h.thread_id != w.ident for h in info.held))
        arrived += _unit_records_locked(first=False)
        resumed = sum(1 for w in _workers.values() if w.parked)
        _release_locked()
        stall = _now() - started
        info.stall_seconds = stall
        info.held += arrived
        _pauses += 1
        _last_stall = stall
        if _max_stall is None or stall > _max_stall:
            _max_stall = stall
    _hand_over(resumed)


def _hand_over(resumed: int) -> None:
    """After a release: let the ``resumed`` parked threads take the GIL before this one goes on.

    ``notify_all`` wakes them, but each needs the GIL to run, and a thread
    that keeps computing gives it up only once per switch interval (5 ms):
    sleeping gives it up at once. About one GIL hand-off per thread, capped.
    """
    if resumed and _GIL:
        _sleep(min(resumed * _HAND_OVER_EACH, _HAND_OVER_MAX))


def _release_locked() -> None:
    global _pending, _holder, _holder_depth, _holder_thread
    _pending = False
    _holder = None
    _holder_depth = 0
    _holder_thread = None
    _late.clear()
    _waited.clear()
    _arrived.clear()
    _resume.notify_all()
    _free.notify_all()
    if _held:
        _wake_held_locked()
    if _unit_held:
        _unit_held.clear()


def _held_count_locked(ident: int) -> int:
    return len(_workers) - (1 if ident in _workers else 0)


def _held_worker(w: _Worker) -> HeldWorker:
    if w in _arrived:
        how = "arrived"
    elif w.ident in _waited:
        how = "waited"
    elif w.parked:
        how = "parked"
    else:
        how = "idle"
    return HeldWorker(name=w.name, thread_id=w.ident, how=how, unit=w.unit)


def _held_locked(ident: int) -> tuple[HeldWorker, ...]:
    """The workers a pause held by ``ident`` holds now (all parked or idle)."""
    return tuple(_held_worker(w) for i, w in _workers.items() if i != ident)


def current_pause_holder() -> int | None:
    """Ident of the thread holding (or acquiring) the pause, or ``None``."""
    return _holder


# --------------------------------------------------------------------------- async units of work
# ``async_critical()`` (see _asyncio.py). A unit counts in its loop thread's worker (``units``,
# plus one registration: ``depth`` and ``loop_depth``); while ``units`` > 0 the thread is not at
# a safepoint and never parks (the loop must keep running so that the units can finish). A unit
# that starts while a pause is pending awaits a future kept in ``_held``; releasing the pause
# wakes every held future with ``call_soon_threadsafe``. All of it is under ``_lock`` and works
# from any thread: a unit may be left by a pauser running in its context, or closed by the GC.

_current_unit: ContextVar[_Unit | None] = ContextVar("safepoints_async_unit", default=None)
_held: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
#: PauseInfo.held entries for async units (how="waited": in flight when the pause was requested;
#: "arrived": held on entry), the first ``_unit_held_reported`` of them already in ``held``.
_unit_held: list[HeldWorker] = []
_unit_held_reported = 0
_pause_serial = 0  # counts pauses, so that a held unit is reported once per pause


class _Unit:
    """One ``async_critical()`` block on an event loop (also the value of ``_current_unit``)."""

    __slots__ = ("active", "counted", "held_in", "ident", "loop", "name", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str | None) -> None:
        self.loop = loop
        self.thread = threading.current_thread()
        self.ident = _get_ident()
        self.name = name if name is not None else self.thread.name
        self.active = False  # entered and not yet exited: the task (and tasks it starts) is inside
        self.counted = False  # counted in its loop's worker (not while a pause from inside it runs)
        self.held_in = -1  # the last pause (``_pause_serial``) that held it on entry


def _unit_enter(unit: _Unit) -> asyncio.Future[None] | None:
    """On the loop thread: count ``unit`` in and return None, or (a pause is pending) a future to await."""
    with _lock:
        if _pending:
            held: asyncio.Future[None] = unit.loop.create_future()
            _held.setdefault(unit.loop, []).append(held)
            if unit.held_in != _pause_serial:  # once per pause, however often it wakes to look
                unit.held_in = _pause_serial
                w = _workers.get(unit.ident)  # named like the loop's worker when it has one
                name = w.name if w is not None and w.thread is unit.thread else unit.name
                _unit_held.append(HeldWorker(name=name, thread_id=unit.ident, how="arrived", unit=True))
            return held
        _unit_count_locked(unit)
        unit.active = True
        return None


def _unit_exit(unit: _Unit) -> None:
    with _lock:
        unit.active = False
        _unit_uncount_locked(unit)


def _unit_count_locked(unit: _Unit) -> None:
    ident = unit.ident
    w = _workers.get(ident)
    if w is not None and w.thread is not unit.thread:  # a dead thread's ident was reused
        del _workers[ident]
        w = None
    if w is None:  # registered for its units only: HeldWorker.unit tells it from a long-lived worker
        w = _Worker(unit.name, unit.thread, ident, unit=True)
        w.depth = 0
        _workers[ident] = w
    elif w.loop is not None and w.loop is not unit.loop:
        raise RuntimeError("this thread is already registered with a different event loop")
    w.depth += 1
    w.loop = unit.loop
    w.loop_depth += 1
    w.units += 1
    unit.counted = True


def _unit_uncount_locked(unit: _Unit) -> None:
    if not unit.counted:
        return
    unit.counted = False
    ident = unit.ident
    w = _workers.get(ident)
    if w is None or w.loop is not unit.loop or w.thread is not unit.thread:
        return  # dropped with its closed loop or its dead thread
    w.units -= 1
    w.loop_depth -= 1
    if w.loop_depth <= 0:
        w.loop = None
        w.loop_depth = 0
    w.depth -= 1
    if w.depth <= 0:  # the loop was registered for its units only: it leaves, nothing to park
        del _workers[ident]
        _acknowledge_locked(ident)
    elif w.units == 0 and _pending and _holder != ident:
        if w.safe():
            _acknowledge_locked(ident)
        elif w.loop is not None and not w.parked:
            # the pauser's wake-up found units in flight and did not park: park between callbacks now
            try:
                w.loop.call_soon_threadsafe(checkpoint)
            except RuntimeError:  # closed: dropped at the pauser's next poll
                pass


def _unit_forget_held(loop: asyncio.AbstractEventLoop, held: asyncio.Future[None]) -> None:
    with _lock:
        futures = _held.get(loop)
        if futures is not None and held in futures:
            futures.remove(held)
            if not futures:
                del _held[loop]


def _unit_check_holder() -> None:
    """A held unit's periodic look: release a pause whose holder thread died holding it."""
    with _lock:
        _drop_dead_holder_locked()


def _wake_held_locked() -> None:
    for loop, futures in _held.items():
        try:
            loop.call_soon_threadsafe(_wake_futures, futures)
        except RuntimeError:  # closed: the units held on it can never run
            pass
    _held.clear()


def _wake_futures(futures: list[asyncio.Future[None]]) -> None:
    for held in futures:
        if not held.done():  # a held unit may have been cancelled meanwhile
            held.set_result(None)


def _leave_own_unit() -> _Unit | None:
    """A pause requested inside an async unit (on its loop, or in a thread running in its
    context, e.g. ``asyncio.to_thread``) does not wait for that unit: uncount it meanwhile."""
    unit = _current_unit.get()
    if unit is None or not unit.counted:
        return None
    with _lock:
        if not unit.counted:
            return None
        _unit_uncount_locked(unit)
    return unit


def _rejoin_own_unit(unit: _Unit | None) -> None:
    if unit is None:
        return
    with _lock:
        if unit.active and not unit.counted:
            try:
                _unit_count_locked(unit)
            except RuntimeError:  # its thread runs another loop now: the rest goes uncounted
                pass


def _drop_closed_loops_locked() -> None:
    """Forget the registrations and units of loops closed while registered (they can never run)."""
    for ident, w in list(_workers.items()):
        loop = w.loop
        if loop is None or not loop.is_closed():
            continue
        _held.pop(loop, None)
        w.depth -= w.loop_depth
        w.units = 0
        w.loop = None
        w.loop_depth = 0
        if w.depth <= 0:
            del _workers[ident]
            _acknowledge_locked(ident)


def _units_after_fork_locked(survivor: _Worker | None, *, held: bool) -> None:
    """In a fork child: held units of other threads' loops are gone; the survivor's wake on their
    own (``_HOLDER_CHECK``) if the pause did not survive, or when the survivor's pause ends."""
    keep = survivor.loop if survivor is not None and held else None
    _unit_held.clear()
    for loop in list(_held):
        if loop is not keep:
            del _held[loop]


def _units_waited_locked(ident: int) -> None:
    """At a pause request: the async units in flight, which it will wait for (not ``ident``'s)."""
    global _pause_serial, _unit_held_reported
    _pause_serial += 1
    _unit_held.clear()
    _unit_held_reported = 0
    for i, w in _workers.items():
        if w.units and i != ident:
            _unit_held.extend([HeldWorker(name=w.name, thread_id=i, how="waited", unit=True)] * w.units)


def _unit_records_locked(*, first: bool) -> tuple[HeldWorker, ...]:
    """For PauseInfo.held: the async-unit entries so far (at acquire), or those since (at release)."""
    global _unit_held_reported
    start = 0 if first else _unit_held_reported
    _unit_held_reported = len(_unit_held)
    return tuple(_unit_held[start:])


def _loop_label(loop: asyncio.AbstractEventLoop) -> str:
    return f"{type(loop).__name__} 0x{id(loop):x}"


# --------------------------------------------------------------------------- introspection


def _is_alive(thread: threading.Thread, ident: int) -> bool:
    if _DummyThread is not None and isinstance(thread, _DummyThread):
        # not started by threading: is_alive() cannot tell; ask the interpreter
        return ident in sys._current_frames()
    return thread.is_alive()


def _drop_dead_holder_locked() -> bool:
    """Release a pause whose holder thread exited without ending it; True if it did."""
    thread, holder = _holder_thread, _holder
    if thread is None or holder is None or _is_alive(thread, holder):
        return False
    _release_locked()
    return True


def _reap_locked() -> None:
    """Drop workers whose thread has exited without leaving its ``worker()`` block."""
    dead = [ident for ident, w in _workers.items() if not _is_alive(w.thread, ident)]
    for ident in dead:
        del _workers[ident]
        _acknowledge_locked(ident)
    _drop_closed_loops_locked()


def _outside_package(frame: FrameType | None) -> list[FrameType]:
    """The stack, innermost first, from the innermost frame outside this package."""
    stack = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    for i in range(len(stack) - 1, -1, -1):  # outermost safepoints frame: start at its caller
        if os.path.dirname(stack[i].f_code.co_filename) == _PACKAGE_DIR:
            return stack[i + 1 :]
    return stack


def _describe(frame: FrameType) -> str:
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return f"{code.co_filename}:{frame.f_lineno} in {name}"


def _is_stdlib(filename: str) -> bool:
    if "site-packages" in filename or "dist-packages" in filename:
        return False
    return filename.startswith(_STDLIB_DIRS) or filename.startswith("<frozen ")


def _where(frame: FrameType | None) -> str | None:
    """``file:line in func`` of the innermost frame outside this package."""
    stack = _outside_package(frame)
    return _describe(stack[0]) if stack else None


def _caller_where(frame: FrameType | None) -> str | None:
    """Like ``_where`` but skipping standard-library frames (``Event.wait`` and the like)."""
    for f in _outside_package(frame):
        if not _is_stdlib(f.f_code.co_filename):
            return _describe(f)
    return None


def _info(w: _Worker, frames: dict[int, FrameType]) -> WorkerInfo:
    return WorkerInfo(
        name=w.name,
        thread_id=w.ident,
        native_id=w.native_id,
        state=w.state(),
        where=_where(frames.get(w.ident)),
        loop=None if w.loop is None else _loop_label(w.loop),
        units=w.units,
    )


def _thread_label(ident: int | None) -> str:
    w = _workers.get(ident) if ident is not None else None
    if w is not None:
        return f"worker {w.name!r} (thread {ident})"
    for t in threading.enumerate():
        if t.ident == ident:
            return f"thread {t.name!r} ({ident})"
    return f"thread {ident}"


def _timeout_message(
    late: tuple[WorkerInfo, ...], callers: list[str | None], timeout: float
) -> str:
    parts = []
    for info, caller in zip(late, callers, strict=True):
        part = (
            f"{info.name!r} (thread {info.thread_id}, native {info.native_id}) {info.state} "
            f"at {info.where or '<no Python frame>'}"
        )
        if caller is not None and caller != info.where:
            part += f" (called from {caller})"
        if info.units:
            part += f" with {info.units} async unit(s) of work in flight on event loop {info.loop}"
        parts.append(part)
    return (
        f"safepoints.pause() timed out after {timeout:g}s: {len(late)} worker thread(s) did "
        f"not reach a safepoint: {'; '.join(parts)}. The pause was abandoned and every worker "
        "released; make these threads call safepoints.checkpoint() more often, wrap their "
        "blocking waits in safepoints.idle(), keep critical() and async_critical() blocks "
        "short, or retry with a longer timeout."
    )


def statistics() -> Statistics:
    """Snapshot: registered workers with state and location, and pause counters."""
    frames = sys._current_frames()
    try:
        with _lock:
            _reap_locked()
            infos = tuple(_info(w, frames) for w in _workers.values())
            pending, holder = _pending, _holder
            pauses, timeouts = _pauses, _pause_timeouts
            last, worst = _last_stall, _max_stall
    finally:
        del frames
    counts = {state: 0 for state in ("running", "parked", "idle", "critical")}
    for i in infos:
        counts[i.state] += 1
    return Statistics(
        workers=infos,
        pause_pending=pending,
        pause_holder=holder,
        running=counts["running"],
        parked=counts["parked"],
        idle=counts["idle"],
        critical=counts["critical"],
        pauses=pauses,
        pause_timeouts=timeouts,
        last_stall_seconds=last,
        max_stall_seconds=worst,
    )


# --------------------------------------------------------------------------- fork


def _reset_after_fork_in_child() -> None:
    """The child of ``os.fork()`` has one thread: the one that forked.

    Every other thread is gone, and with it any lock it held: a pause holder
    that died in the parent's other thread would leave the child unable to
    pause forever. The child gets fresh locks, forgets every worker but the
    forking thread, and keeps a pause only if the forking thread holds it
    (its ``pause()`` block will end it as usual).
    """
    global _lock, _resume, _progress, _free, _pending, _holder, _holder_depth, _holder_thread
    me = _get_ident()
    _lock = threading.RLock()
    _resume = threading.Condition(_lock)
    _progress = threading.Condition(_lock)
    _free = threading.Condition(_lock)
    survivor = _workers.get(me)
    _workers.clear()
    if survivor is not None:
        survivor.thread = threading.current_thread()
        survivor.parked = False
        _workers[me] = survivor
    _late.clear()
    _waited.clear()
    _arrived.clear()
    _units_after_fork_locked(survivor, held=_holder == me)
    if _holder == me:
        _holder_thread = threading.current_thread()
    else:
        _pending = False
        _holder = None
        _holder_depth = 0
        _holder_thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork_in_child)
