"""The transaction: verify, pause, re-check, swap, verify the swap, resume, checks, probation, record.

Design notes
============

The problem
-----------
A patch changes code that other threads are running, and it can fail at
any point: the file is broken, a worker will not park, module code raises
during the swap, a check fails or hangs, patched code raises once traffic
reaches it, the audit disk fills up, the operator presses Ctrl-C, the
process forks. Whatever happens, the process must end in one of a few
states that can be named, and that the operator can see and undo:
*unchanged* (nothing happened), *rolled back* (applied, then every object
restored, both recorded), *applied* (in effect, recorded, rollbackable) or,
when an object refuses to be restored, *incomplete* (restart). A patch that
is live but unrecorded, or recorded but impossible to roll back, is the
failure this module exists to prevent.

What does not work
------------------
* ``try/except Exception`` around "the rest": ``KeyboardInterrupt`` and
  ``SystemExit`` (a check calling ``sys.exit``, Ctrl-C in a deploy script
  during probation) are ``BaseException``; they would skip the rollback and
  leave the new code running with no record of it.
* Recording at the end. If the history entry and the undo log only exist
  once everything succeeded, any failure in between (an audit write on a
  full disk is enough) loses the only way back.
* Treating side effects as infallible. The audit file is a side effect; a
  write that fails half-way also leaves a torn line that breaks every
  reader of the file.
* Queuing transactions, or making ``rollback`` wait behind a transaction
  whose check hangs: the operator's way out must not depend on the thing
  that is failing.
* Re-running the module (``importlib.reload``): it re-executes every
  statement and re-creates every object, so identities, caches and state
  change and there is nothing exact to go back to.

The choice
----------
* One transaction at a time (``_tx_lock``, refused, not queued), run as
  named steps (``APPLY_STEPS``, ``ROLLBACK_STEPS``). Each step runs through
  ``hotfix._events.step``: observers (metrics, tracing) see it, and tests
  inject a fault at every one of them, so a step added later is covered.
* Record first, then act: before the first mutation the patch is in
  ``history()`` (status ``pending``) and its ``UndoLog`` is in the list of
  rollbackable patches. Every mutation of the swap goes through that log.
* One failure handler, deciding by *how far* the transaction got, not by
  *what* failed: nothing mutated -> refused (``PatchRejected``, state
  unchanged); mutated but workers never resumed -> undone under the same
  pause (refused, unchanged); workers resumed -> undone under a new pause,
  recorded as a rollback (``PatchRolledBack``; ``KeyboardInterrupt`` and
  ``SystemExit`` are re-raised after the rollback, with a note). The undo
  and its record run with SIGINT deferred (main thread), so a second Ctrl-C
  cannot split them.
* The audit file is checked before the pause (``preflight``); a write that
  fails before the swap refuses, after the swap rolls back (reason
  ``audit-failed``), during a rollback is noted (``audit_error``) without
  changing what happened. Lines are written whole (``hotfix._audit``).
* Probation's watch starts under the pause, before workers resume, so the
  first call after the swap is already watched. Checks run in their own
  thread with a timeout; ``rollback()`` of the patch in its probation wakes
  the transaction, which rolls back at once.
* ``fork()``: the child gets fresh locks; a transaction whose thread did
  not survive the fork is settled (its patch is applied and rollbackable in
  the child, or forgotten if nothing had changed yet).

Its limits
----------
* A check that hangs keeps running in its thread after the timeout (Python
  cannot kill a thread); its result is ignored.
* Statements with side effects beyond their own bindings, and what a
  ``__hotfix_migrate__`` hook does to objects (rather than to the module
  namespace), cannot be undone.
* When workers do not park for three attempts, the automatic rollback runs
  without a pause as a last resort (a patch that failed must not stay).
* SIGKILL or power loss: in-memory history is gone with the process; the
  audit file is whole line by line, and the restarted process runs the code
  on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import attrs

import safepoints
from verification import (
    BLOCKED,
    RISKY,
    UNCHANGED,
    CodeSet,
    Plan,
    Report,
    SourceProblem,
    analyze,
    read_state,
    verify_swap,
)

from . import _audit, _events
from ._audit import AuditWriteError, configure_audit
from ._baseline import get_baseline, set_code_cache
from ._exceptions import HotfixError, PatchRejected, PatchRolledBack, RollbackIncomplete
from ._latency import responsive
from ._outcomes import PatchStatus, Reason, State
from ._probation import ProbationWatch, instrumented_twin
from ._records import Hold, Patch, Rollback, SwapEvent, WaitedThread
from ._swap import Swapper, UndoIncomplete, UndoLog
from ._tracing import traced

DEFAULT_PROBATION = 3.0
DEFAULT_TIMEOUT = 2.0
#: How long one check may run before the patch is rolled back (reason check-timeout).
DEFAULT_CHECK_TIMEOUT = 10.0
#: How many applied patches can still be rolled back; older undo data is released.
ROLLBACK_DEPTH = 16
#: How many records history() keeps in memory (the audit log keeps everything).
HISTORY_LIMIT = 1000

#: The steps of ``apply``, in order. ``swap`` .. ``watch`` run under the pause.
APPLY_STEPS = ("preflight", "verify", "begin", "pause", "wait-threads", "recheck", "swap", "verify-swap",
               "watch", "resume", "checks", "probation", "unwatch", "commit")
#: The steps of ``rollback``, in order. ``undo`` runs under the pause. ``announce`` writes the audit record
#: ``rolling-back`` before anything changes, so the audit file never says "applied" about an undone patch.
ROLLBACK_STEPS = ("preflight", "select", "announce", "pause", "undo", "resume", "commit")

_log = logging.getLogger("hotfix")
_tx_lock = threading.Lock()
_state_lock = threading.Lock()
_history: list[Patch | Rollback] = []
_applied: list[_Applied] = []  # rollback-able patches (and the one in progress), oldest first
_current: _Apply | None = None  # the apply in progress
_ids = itertools.count(1)
_SHA256 = re.compile(r"[0-9a-f]{64}")

Check = Callable[[], object]
Target = types.ModuleType | str


@attrs.define(eq=False)
class _Applied:
    patch: Patch
    undo: UndoLog


class _PatchLog(logging.LoggerAdapter):
    """Every record carries the patch id (``record.patch_id``), like a trace id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        kwargs.setdefault("extra", {})["patch_id"] = self.extra["patch_id"]
        return f"[{self.extra['patch_id']}] {msg}", kwargs


# --------------------------------------------------------------------------- public

_UNSET: Any = object()


def configure(*, audit_log: Any = _UNSET, code_cache: Any = _UNSET, rollback_depth: int | None = None,
              history_limit: int | None = None) -> None:
    """Process-wide settings. ``audit_log``: path of an append-only JSONL file (``None`` turns it off;
    a file that cannot be written is refused with ``OSError``); ``code_cache``: where imports after ``install()``
    cache compiled code by content (``None``: beside the source in ``__pycache__``, the default; a
    private directory; ``False``: nowhere);
    ``rollback_depth``: how many applied patches stay rollback-able; ``history_limit``: records
    ``history()`` keeps in memory."""
    global ROLLBACK_DEPTH, HISTORY_LIMIT
    if audit_log is not _UNSET:
        configure_audit(audit_log)
    if code_cache is not _UNSET:
        set_code_cache(code_cache)
    if rollback_depth is not None:
        if rollback_depth < 1:
            raise ValueError("rollback_depth must be at least 1")
        ROLLBACK_DEPTH = rollback_depth
    if history_limit is not None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        HISTORY_LIMIT = history_limit


def resolve_module(target: Target) -> types.ModuleType:
    """A loaded module by object or dotted name; ``PatchRejected`` if it is not loaded."""
    if isinstance(target, types.ModuleType):
        if sys.modules.get(target.__name__) is not target:
            raise PatchRejected(f"module {target.__name__} is not the one in sys.modules; pass the loaded module or its name.",
                                reason=Reason.UNKNOWN_MODULE, modules=(target.__name__,))
        return target
    if not isinstance(target, str) or not target:
        raise PatchRejected(f"{target!r} is not a module or a module name; pass a loaded module or its dotted name.",
                            reason=Reason.INVALID_ARGUMENT)
    module = sys.modules.get(target)
    if module is None:
        raise PatchRejected(f"module {target} is not loaded in this process; only imported modules can be patched.",
                            reason=Reason.UNKNOWN_MODULE, modules=(target,))
    return module


def dry_run(target: Target) -> Report:
    """Verify a module against its file on disk. Changes nothing, runs no module code."""
    module = resolve_module(target)
    with responsive():  # workers keep their turn on the GIL while this computes
        return analyze(module, get_baseline(module.__name__), thread_states=_worker_states(), heap_scan=True,
                       sources=_running_source).report


def _running_source(name: str) -> str | None:
    base = get_baseline(name)
    return base.text if base is not None else None


def _worker_states() -> dict[int, str]:
    return {w.thread_id: w.state for w in safepoints.statistics().workers}


def history() -> list[Patch | Rollback]:
    """Every patch and rollback, oldest first (a patch in progress has status ``pending``)."""
    with _state_lock:
        return list(_history)


@traced("hotfix.apply")
def apply(
    target: Target | Sequence[Target],
    *,
    checks: Iterable[Check] = (),
    probation: float = DEFAULT_PROBATION,
    timeout: float = DEFAULT_TIMEOUT,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    allow_risky: bool = False,
    expect_sha256: str | Sequence[str] | None = None,
    expected_exceptions: tuple[type[BaseException], ...] = (),
    actor: str | None = None,
) -> Patch:
    """Adopt the disk source of one module (or several, as one unit) in place.

    Returns after probation. Raises ``PatchRejected`` (nothing changed),
    ``PatchRolledBack`` (applied, then undone and recorded) or
    ``RollbackIncomplete`` (restart); a ``KeyboardInterrupt``/``SystemExit``
    after the swap is re-raised once the patch is rolled back and recorded.
    Each check must return within ``check_timeout`` seconds. ``actor``
    names who asked, for the audit log.
    """
    patch_id = _new_id()
    names: tuple[str, ...] = ()
    try:
        targets = [target] if isinstance(target, types.ModuleType | str) else list(target)
        names = tuple(t.__name__ if isinstance(t, types.ModuleType) else str(t) for t in targets)
        if not targets:
            raise PatchRejected("no module given; pass a module or its name.", reason=Reason.INVALID_ARGUMENT)
        modules = [resolve_module(t) for t in targets]
        pins = _pins(expect_sha256, len(modules))
        if not check_timeout > 0:
            raise PatchRejected(f"check_timeout must be a positive number of seconds, not {check_timeout!r}.",
                                reason=Reason.INVALID_ARGUMENT)
    except PatchRejected as exc:
        exc.patch_id = exc.patch_id or patch_id
        exc.audit_error = _audit_quietly("rejected", patch_id, actor, modules=list(names or (str(target),)),
                                         outcome=exc.reason, reason=exc.reason, detail=exc.message)
        raise
    if not _tx_lock.acquire(blocking=False):
        names = tuple(m.__name__ for m in modules)
        err = _audit_quietly("rejected", patch_id, actor, modules=list(names), outcome="busy", reason=Reason.BUSY)
        raise PatchRejected("another hotfix transaction is in progress; wait for it to finish and try again.",
                            reason=Reason.BUSY, modules=names, patch_id=patch_id, audit_error=err)
    try:
        tx = _Apply(patch_id, modules, actor, _Options(tuple(checks), probation, timeout, check_timeout,
                                                       allow_risky, tuple(pins), tuple(expected_exceptions)))
        return tx.run()
    finally:
        _release_tx_lock()


@traced("hotfix.rollback")
def rollback(patch_id: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, actor: str | None = None) -> Rollback:
    """Undo the latest applied patch (or ``patch_id``), restoring the exact previous objects.

    A patch still in its checks or probation window is rolled back at once
    (its ``apply`` raises ``PatchRolledBack`` with reason ``requested``).
    """
    if not _tx_lock.acquire(blocking=False):
        running = _current
        if running is not None and running.request_rollback(patch_id, actor):
            running.finished.wait(60.0 + 4 * max(timeout, running.options.timeout))
            if running.rolled_back is not None:
                return running.rolled_back
            if isinstance(running.ended_with, RollbackIncomplete):
                raise running.ended_with
        err = _audit_quietly("rollback-rejected", patch_id, actor, outcome="busy", reason=Reason.BUSY)
        raise PatchRejected("another hotfix transaction is in progress; wait for it to finish and try again.",
                            reason=Reason.BUSY, patch_id=patch_id, audit_error=err)
    try:
        return _Rollback(patch_id, timeout, actor).run()
    finally:
        _release_tx_lock()


# --------------------------------------------------------------------------- internals


def _release_tx_lock() -> None:
    with contextlib.suppress(RuntimeError):  # a fork in the transaction's own thread re-made the lock
        _tx_lock.release()


def _pins(expect: str | Sequence[str] | None, n: int) -> list[str | None]:
    if expect is None:
        return [None] * n
    pins: list[str | None] = [expect] if isinstance(expect, str) else list(expect)
    if len(pins) != n:
        raise PatchRejected(f"expect_sha256 has {len(pins)} values for {n} modules; give one per module.",
                            reason=Reason.INVALID_ARGUMENT)
    for pin in pins:
        if pin and not (isinstance(pin, str) and _SHA256.fullmatch(pin)):
            raise PatchRejected(f"expect_sha256 {pin!r} is not a sha256: give the 64 lowercase hex digits a dry run shows.",
                                reason=Reason.INVALID_ARGUMENT)
    return pins


def _new_id() -> str:
    return f"hf-{os.getpid()}-{next(_ids)}"


def _slim(patch: Patch) -> Patch:
    """What history keeps: no reports (their diffs are the bulk), verdicts stay."""
    return attrs.evolve(patch, report=None, reports=())


def _record_locked(item: Patch | Rollback) -> None:
    _history.append(_slim(item) if isinstance(item, Patch) else item)
    del _history[:-HISTORY_LIMIT]


def _replace_locked(patch: Patch) -> None:
    """Put the newer version of a patch's record in history (it was recorded when it began)."""
    for i in range(len(_history) - 1, -1, -1):
        item = _history[i]
        if isinstance(item, Patch) and item.id == patch.id:
            _history[i] = _slim(patch)
            return
    _record_locked(patch)


def _forget_locked(entry: _Applied) -> None:
    """A transaction that changed nothing leaves no record in memory (the audit file has it)."""
    if entry in _applied:
        _applied.remove(entry)
    for i in range(len(_history) - 1, -1, -1):
        item = _history[i]
        if isinstance(item, Patch) and item.id == entry.patch.id:
            del _history[i]
            return


def _audit_quietly(step: str, patch_id: str | None, actor: str | None, **fields: object) -> str | None:
    """Audit where a failed write must not change the outcome; returns the error text, if any."""
    try:
        _audit.audit(step, patch_id, actor, **fields)
    except AuditWriteError as exc:
        _log.error("[%s] %s (the outcome stands; history() has it)", patch_id, exc.strerror)
        return str(exc.strerror)
    return None


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Run a block that must not be split by Ctrl-C (an undo and its record); deliver it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    if signal.getsignal(signal.SIGINT) is None:  # installed outside Python: leave it alone
        yield
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except (ValueError, TypeError, OSError):  # not the main interpreter, or signals unavailable
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def _undo_under_pause(undo: UndoLog, timeout: float) -> float:
    with safepoints.pause(timeout=timeout) as held:
        undo.undo()
    return held.stall_seconds or 0.0


def _automatic_undo(undo: UndoLog, timeout: float, plog: logging.LoggerAdapter) -> float:
    """A failed patch must not stay: retry the pause, and as a last resort undo without one."""
    for attempt in range(3):
        try:
            return _undo_under_pause(undo, timeout * (attempt + 1))
        except safepoints.PauseTimeout as exc:
            plog.error("rollback could not park workers (attempt %d): %s", attempt + 1, exc)
    plog.error("rolling back without a pause: workers never parked")
    start = time.perf_counter()
    undo.undo()
    return time.perf_counter() - start


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _check_name(check: Check) -> str:
    return str(getattr(check, "__qualname__", None) or repr(check))


class _RollBack(Exception):
    """Internal: after the workers resumed, the patch must go (a check, probation, a request, the audit)."""

    def __init__(self, reason: Reason, detail: str, error: BaseException | None = None,
                 check: str | None = None, formatted: str | None = None) -> None:
        super().__init__(detail)
        # formatted while the new code is still in place: the traceback shows the new source lines
        self.formatted = formatted if formatted is not None or error is None else _format(error)
        self.reason = reason
        self.detail = detail
        self.error = error
        self.check = check


@attrs.frozen
class _Options:
    checks: tuple[Check, ...]
    probation: float
    timeout: float
    check_timeout: float
    allow_risky: bool
    pins: tuple[str | None, ...]
    expected: tuple[type[BaseException], ...]


class _Apply:
    """One ``apply``: the steps of ``APPLY_STEPS`` as methods ``step_<name>``, and one failure handler."""

    def __init__(self, patch_id: str, modules: list[types.ModuleType], actor: str | None, options: _Options) -> None:
        self.id = patch_id
        self.modules = modules
        self.names = tuple(m.__name__ for m in modules)
        self.who = ", ".join(self.names)
        self.actor = actor
        self.options = options
        self.log = _PatchLog(_log, {"patch_id": patch_id})
        self.report: Report | tuple[Report, ...] | None = None
        self.reports: tuple[Report, ...] = ()
        self.plans: list[Plan] = []
        self.work: list[Plan] = []
        self.shas: tuple[str, ...] = ()
        self.started = time.time()
        self.undo = UndoLog()
        self.events: list[SwapEvent] = []
        self.entry: _Applied | None = None
        self.paused: contextlib.ExitStack | None = None
        self.held: safepoints.PauseInfo | None = None
        self.waited: tuple[WaitedThread, ...] = ()  # unregistered threads the swap waited for
        self.wait_seconds = 0.0
        self.watch: ProbationWatch | None = None
        self.twins: list[tuple[types.FunctionType, types.CodeType, types.CodeType]] = []  # 3.11: probation's twins
        self.watching = False  # the watch's hooks are in effect
        self.swapping = False  # the swap step began: the undo log may hold entries
        self.exposed = False  # workers resumed after the swap: a failure now is a rollback
        self.cancellable = False  # rollback() may end this transaction (checks, probation)
        self.cancel_actor: str | None = None
        self.wake = threading.Event()  # doorbell: a check finished, probation saw a failure, a rollback request
        self.finished = threading.Event()
        self.rolled_back: Rollback | None = None
        self.ended_with: BaseException | None = None
        self.result: Patch | None = None
        self.thread = threading.get_ident()

    # ------------------------------------------------------------------ the run

    def run(self) -> Patch:
        global _current
        _current = self
        try:
            for name in APPLY_STEPS:
                with _events.step("apply", name, self.id):
                    getattr(self, "step_" + name.replace("-", "_"))()
                if self.result is not None:
                    break
            assert self.result is not None
            _events.end("apply", self.id, status=self.result.status.value, modules=self.names)
            return self.result
        except BaseException as exc:
            try:
                self.fail(exc)
            except BaseException as final:
                self.ended_with = final
                _events.end("apply", self.id, reason=getattr(final, "reason", Reason.INTERRUPTED).value,
                            state=getattr(final, "state", State.ROLLED_BACK if self.exposed else State.UNCHANGED).value,
                            error=type(final).__name__, modules=self.names)
                raise
            raise AssertionError("fail() always raises") from exc
        finally:
            _current = None
            self.finished.set()

    def audit(self, step: str, **fields: object) -> None:
        _audit.audit(step, self.id, self.actor, modules=list(self.names), **fields)

    def reject(self, message: str, reason: Reason, **fields: Any) -> PatchRejected:
        err = _audit_quietly("rejected", self.id, self.actor, modules=list(self.names), outcome=reason,
                             reason=reason, detail=message)
        self.log.warning("rejected: %s", message)
        return PatchRejected(message, self.report, reason=reason, patch_id=self.id, modules=self.names,
                             audit_error=err, **fields)

    # ------------------------------------------------------------------ steps

    def step_preflight(self) -> None:
        try:
            _audit.preflight()
        except AuditWriteError as exc:
            raise self.reject(f"{self.who} was not patched: {exc.strerror}; fix the audit file (or configure another)"
                              " and try again.", Reason.AUDIT_UNWRITABLE, file=exc.path, error=exc) from None

    def step_verify(self) -> None:
        states = _worker_states()
        with responsive():  # workers keep their turn on the GIL while this computes
            self.plans = [analyze(m, get_baseline(m.__name__), thread_states=states, sources=_running_source)
                          for m in self.modules]
        self.reports = tuple(a.report for a in self.plans)
        self.report = self.reports[0] if len(self.reports) == 1 else self.reports
        self.shas = tuple(a.disk.sha256 for a in self.plans)
        self.audit("verified", verdicts=[r.verdict for r in self.reports], sha256=list(self.shas))
        for a, pin in zip(self.plans, self.options.pins, strict=True):
            r = a.report
            if r.verdict == BLOCKED:
                worst = next(f for f in r.findings if f.severity == BLOCKED)
                raise self.reject(f"{r.module} was not patched: {worst.message}; fix the file and try again.",
                                  Reason.BLOCKED, file=a.path or None)
            if r.verdict == RISKY and not self.options.allow_risky:
                codes = sorted({f.code for f in r.findings if f.severity == RISKY})
                raise self.reject(
                    f"{r.module} was not patched: the change is risky ({', '.join(codes)}); review the dry run and"
                    " pass allow_risky=True to apply it.", Reason.RISKY, file=a.path or None)
            if pin is not None and a.disk.sha256 != pin:
                actual = a.disk.sha256 or "unreadable"
                raise self.reject(f"{r.module} was not patched: the file's sha256 is {actual}, not the reviewed {pin};"
                                  " dry-run again.", Reason.SHA256_MISMATCH, file=a.path, sha256=actual)
        if all(r.verdict == UNCHANGED for r in self.reports):
            patch = Patch(self.id, PatchStatus.UNCHANGED, self.names, self.report, self.reports, (), 0.0, self.started,
                          None, time.time(), 0.0, self.shas)
            with _state_lock:
                _record_locked(patch)
            _audit_quietly("unchanged", self.id, self.actor, modules=list(self.names), outcome="unchanged",
                           sha256=list(self.shas))
            self.log.info("%s unchanged: nothing to apply", self.who)
            self.result = patch
            return
        self.work = [a for a in self.plans if a.report.verdict != UNCHANGED]
        self.twins = self._instrumented_twins()  # compiled here, not under the pause
        self.log.info("applying %s (verdicts %s)", self.who, ", ".join(r.verdict for r in self.reports))

    def _instrumented_twins(self) -> list[tuple[types.FunctionType, types.CodeType, types.CodeType]]:
        """Without ``sys.monitoring`` (3.11) probation swaps in instrumented twins of the patched code."""
        twins: list[tuple[types.FunctionType, types.CodeType, types.CodeType]] = []
        if hasattr(sys, "monitoring") or (self.options.probation <= 0 and not self.options.checks):
            return twins
        for a in self.work:
            for probe in a.probes:
                twin = instrumented_twin(probe.node, probe.scope, a.path, a.compile_flags, probe.code)
                if twin is not None:
                    twins.extend((f, probe.code, twin) for f in probe.live)
        return twins

    def step_begin(self) -> None:
        """Record first: the patch is in history and rollbackable before anything changes."""
        patch = Patch(self.id, PatchStatus.PENDING, self.names, self.report, self.reports, (), 0.0, self.started,
                      None, 0.0, 0.0, self.shas)
        self.entry = _Applied(patch, self.undo)
        with _state_lock:
            _record_locked(patch)
            _applied.append(self.entry)

    def step_pause(self) -> None:
        stack = contextlib.ExitStack()
        try:
            self.held = stack.enter_context(safepoints.pause(timeout=self.options.timeout))
        except safepoints.PauseTimeout as exc:
            raise self.reject(f"{self.who} was not patched: workers did not park within {self.options.timeout}s: {exc}",
                              Reason.PAUSE_TIMEOUT) from None
        self.paused = stack

    def step_wait_threads(self) -> None:
        # the timeout counts from here: workers are parked, unregistered threads get the same time to leave
        started = time.perf_counter()
        self.waited = _wait_consistent(self.work, time.monotonic() + self.options.timeout, self)
        self.wait_seconds = time.perf_counter() - started if self.waited else 0.0

    def step_recheck(self) -> None:
        _recheck_files(self.work, self)

    def step_swap(self) -> None:
        self.swapping = True
        try:
            for a in self.work:
                self.events.extend(Swapper(a, self.undo).run())
        except Exception as exc:
            raise self.reject(
                f"{self.who} was not patched: {type(exc).__name__} during the swap: {exc}; nothing was changed,"
                " fix the source and try again.", Reason.SWAP_FAILED, error=exc) from exc

    def step_verify_swap(self) -> None:
        problems = [p for a in self.work for p in verify_swap(a)]
        if problems:
            raise self.reject(f"{self.who} was not patched: the swapped code is not the compiled disk code"
                              f" ({'; '.join(problems)}); nothing was changed; report this.", Reason.VERIFY_FAILED)

    def step_watch(self) -> None:
        """Probation watches from here, under the pause: the first call after the resume is seen."""
        if self.options.probation <= 0 and not self.options.checks:
            return
        codes = CodeSet(c for a in self.work for c in a.watched)
        twins = self.twins  # compiled after the verification, before the pause
        codes.update(t for _, _, t in twins)
        self.watch = ProbationWatch(codes, self.options.expected, twins, failed=self.wake)
        self.watching = True
        self.watch.__enter__()

    def step_resume(self) -> None:
        assert self.paused is not None and self.held is not None and self.entry is not None
        self.exposed = True  # from here a failure is a rollback under a new pause
        self._close_pause()
        stall = self.held.stall_seconds or 0.0
        hold = _hold(self.held, self.waited, self.wait_seconds)
        patch = attrs.evolve(self.entry.patch, events=tuple(self.events), stall_seconds=stall, applied_at=time.time(),
                             hold=hold)
        with _state_lock:
            self.entry.patch = patch
            _replace_locked(patch)
            self.cancellable = self.cancel_actor is None
        self.log.info("swapped %d definitions (%s)", len(self.events), hold)
        self.audit("swapped", outcome="swapped", stall_seconds=stall, hold=hold.to_dict(), events=len(self.events),
                   sha256=list(self.shas))

    def step_checks(self) -> None:
        for check in self.options.checks:
            self._run_check(check)

    def _run_check(self, check: Check) -> None:
        name = _check_name(check)
        box: dict[str, Any] = {}

        def run_check() -> None:
            try:
                box["result"] = check()
            except BaseException as exc:  # delivered to the transaction's thread below
                box["error"] = exc
            finally:
                box["done"] = True
                self.wake.set()

        thread = threading.Thread(target=run_check, name=f"hotfix-check {name}", daemon=True)
        deadline = time.monotonic() + self.options.check_timeout
        thread.start()
        while "done" not in box:
            self._stop_if_requested_or_failed()
            left = deadline - time.monotonic()
            if left <= 0:
                raise _RollBack(Reason.CHECK_TIMEOUT, f"check {name} did not return within"
                                f" {self.options.check_timeout}s", check=name)
            self.wake.wait(left)
            self.wake.clear()
        error = box.get("error")
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt / SystemExit from a check: roll back, then re-raise it
        if error is not None:
            raise _RollBack(Reason.CHECK_FAILED, f"check {name} raised {type(error).__name__}: {error}", error, name)
        if box.get("result") is False:
            raise _RollBack(Reason.CHECK_FAILED, f"check {name} returned False", check=name)

    def _stop_if_requested_or_failed(self) -> None:
        if self.cancel_actor is not None:
            raise _RollBack(Reason.REQUESTED, f"rollback requested by {self.cancel_actor} during probation")
        watch = self.watch
        if watch is not None and watch.failure is not None:
            exc = watch.failure
            raise _RollBack(Reason.PROBATION_FAILED,
                            f"{type(exc).__name__}: {exc} escaped {watch.where} during probation", exc,
                            formatted=watch.formatted)

    def step_probation(self) -> None:
        deadline = time.monotonic() + max(self.options.probation, 0.0)
        while True:
            self._stop_if_requested_or_failed()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(left)
            self.wake.clear()

    def step_unwatch(self) -> None:
        self._end_watch()
        self._stop_if_requested_or_failed()

    def _end_watch(self) -> None:
        if self.watching and self.watch is not None:
            self.watching = False
            self.watch.__exit__(None, None, None)

    def step_commit(self) -> None:
        assert self.entry is not None and self.held is not None
        with _state_lock:
            self.cancellable = False
        self._stop_if_requested_or_failed()
        finished = time.time()
        applied_at = self.entry.patch.applied_at or finished
        patch = attrs.evolve(self.entry.patch, status=PatchStatus.APPLIED, finished_at=finished,
                             probation_seconds=finished - applied_at)
        try:
            self.audit("applied", outcome="applied", sha256=list(self.shas), stall_seconds=self.held.stall_seconds)
        except AuditWriteError as exc:
            raise _RollBack(Reason.AUDIT_FAILED, f"the audit record of the patch could not be written ({exc.strerror})",
                            exc) from None
        with _state_lock:
            self.entry.patch = patch
            _replace_locked(patch)
            others = [a for a in _applied if a is not self.entry] + [self.entry]
            _applied[:] = others[-ROLLBACK_DEPTH:]  # older versions can no longer be rolled back to: release them
        self.log.info("applied; probation passed")
        self.result = patch

    # ------------------------------------------------------------------ rollback requests

    def request_rollback(self, patch_id: str | None, actor: str | None) -> bool:
        """From ``rollback()`` in another thread: end the checks/probation now and roll back."""
        with _state_lock:
            if not self.cancellable or patch_id not in (None, self.id):
                return False
            self.cancellable = False
            self.cancel_actor = actor or "api"
        self.wake.set()
        return True

    # ------------------------------------------------------------------ the one failure handler

    def fail(self, exc: BaseException) -> NoReturn:
        """End the transaction in a defined state, decided by how far it got; always raises."""
        with contextlib.suppress(Exception):
            self._end_watch()
        if not self.swapping:
            self._end_unchanged(exc)
        if not self.exposed:
            self._undo_before_resume(exc)
        self._roll_back_after_resume(exc)

    def _close_pause(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None:
            paused.close()

    def _end_unchanged(self, exc: BaseException) -> NoReturn:
        """Nothing was mutated: forget the pending record and refuse."""
        self._close_pause()
        if self.entry is not None:
            with _state_lock:
                _forget_locked(self.entry)
        if isinstance(exc, PatchRejected):
            raise exc
        if isinstance(exc, AuditWriteError):
            raise self.reject(f"{self.who} was not patched: {exc.strerror}; fix the audit file and try again.",
                              Reason.AUDIT_UNWRITABLE, file=exc.path, error=exc) from None
        refusal = self.reject(f"{self.who} was not patched: the apply was interrupted by {type(exc).__name__}: {exc};"
                              " nothing was changed.", Reason.INTERRUPTED, error=exc)
        if not isinstance(exc, Exception):
            exc.add_note(f"hotfix: {refusal.message}")
            raise exc
        raise refusal from exc

    def _undo_before_resume(self, exc: BaseException) -> NoReturn:
        """Mutated under the pause, workers never resumed: undo under the same pause; nothing was exposed."""
        reason = exc.reason if isinstance(exc, PatchRejected) else Reason.INTERRUPTED
        with _sigint_deferred():
            try:
                self.undo.undo()
            except UndoIncomplete as incomplete:
                self._close_pause()
                self._incomplete(reason, incomplete, exc)
            finally:
                self._close_pause()
        self._end_unchanged(exc)

    def _roll_back_after_resume(self, exc: BaseException) -> NoReturn:
        """Workers ran the new code: undo under a new pause, record the patch and its rollback."""
        formatted: str | None = None
        if isinstance(exc, _RollBack):
            reason, detail, error, check, formatted = exc.reason, exc.detail, exc.error, exc.check, exc.formatted
        elif isinstance(exc, AuditWriteError):
            reason, detail, error, check = (Reason.AUDIT_FAILED, f"the audit record could not be written ({exc.strerror})",
                                            exc, None)
        else:
            reason, detail, error, check = (Reason.INTERRUPTED, f"interrupted by {type(exc).__name__}: {exc}", exc, None)
            formatted = _format(exc)
        assert self.entry is not None
        self._close_pause()
        with _sigint_deferred():
            try:
                stall = _automatic_undo(self.undo, max(self.options.timeout, 1.0), self.log)
            except UndoIncomplete as incomplete:
                self._incomplete(reason, incomplete, exc)
            finished = time.time()
            applied_at = self.entry.patch.applied_at or finished
            patch = attrs.evolve(self.entry.patch, status=PatchStatus.APPLIED, finished_at=finished,
                                 probation_seconds=finished - applied_at)
            record = Rollback(self.id, self.names, reason, detail, stall, finished)
            with _state_lock:
                _replace_locked(patch)
                _record_locked(record)
                if self.entry in _applied:
                    _applied.remove(self.entry)
                self.rolled_back = record
        err = _audit_quietly("rolled-back", self.id, self.actor, modules=list(self.names), outcome="rolled-back",
                             reason=reason, detail=detail, stall_seconds=stall, requested_by=self.cancel_actor)
        if isinstance(exc, AuditWriteError):
            err = err or str(exc.strerror)
        self.log.warning("rolled back: %s", detail)
        message = (f"{self.who} was patched and rolled back: {detail}; the previous code is running"
                   + ("." if reason == Reason.REQUESTED else ", fix the source and apply again."))
        if err is not None:
            message += f" The audit file lacks records of this ({err}); history() has them."
        if not isinstance(exc, Exception):
            exc.add_note(f"hotfix: {message}")
            raise exc
        raise PatchRolledBack(message, self.report, failure=error, reason=reason, patch_id=self.id, modules=self.names,
                              check=check, audit_error=err, traceback=formatted) from exc

    def _incomplete(self, reason: Reason, incomplete: UndoIncomplete, cause: BaseException) -> NoReturn:
        """Some objects could not be restored: record it, say restart."""
        assert self.entry is not None
        finished = time.time()
        detail = f"INCOMPLETE: could not restore {len(incomplete.failures)} object(s): {incomplete}"
        with _state_lock:
            _replace_locked(attrs.evolve(self.entry.patch, status=PatchStatus.APPLIED, finished_at=finished))
            _record_locked(Rollback(self.id, self.names, reason, detail, 0.0, finished))
            if self.entry in _applied:
                _applied.remove(self.entry)
        err = _audit_quietly("rollback-incomplete", self.id, self.actor, modules=list(self.names),
                             outcome="inconsistent", reason=reason, failures=list(incomplete.failures))
        self.log.critical("could not restore everything after %s: %s", reason, incomplete)
        raise RollbackIncomplete(
            f"{self.who}: undoing the patch after {reason} could not restore {len(incomplete.failures)} object(s)"
            f" ({incomplete}); the process may mix old and new code, restart it.",
            self.report, failures=incomplete.failures, patch_id=self.id, reason=reason, modules=self.names,
            audit_error=err, error=cause) from cause


class _Rollback:
    """One requested ``rollback``: the steps of ``ROLLBACK_STEPS``."""

    def __init__(self, patch_id: str | None, timeout: float, actor: str | None) -> None:
        self.patch_id = patch_id
        self.timeout = timeout
        self.actor = actor
        self.entry: _Applied | None = None
        self.paused: contextlib.ExitStack | None = None
        self.held: safepoints.PauseInfo | None = None
        self.stall = 0.0
        self.record: Rollback | None = None
        self.log: logging.LoggerAdapter = _PatchLog(_log, {"patch_id": patch_id})

    def run(self) -> Rollback:
        try:
            for name in ROLLBACK_STEPS:
                with _events.step("rollback", name, self.entry.patch.id if self.entry else self.patch_id):
                    getattr(self, "step_" + name)()
        except BaseException as exc:
            self.fail(exc)
        assert self.record is not None
        _events.end("rollback", self.record.patch_id, reason=Reason.REQUESTED.value, state=State.ROLLED_BACK.value)
        return self.record

    def reject(self, message: str, reason: Reason, **fields: Any) -> PatchRejected:
        entry = self.entry
        patch_id = entry.patch.id if entry else self.patch_id
        err = _audit_quietly("rollback-rejected", patch_id, self.actor, outcome="rejected", reason=reason, detail=message)
        return PatchRejected(message, reason=reason, patch_id=patch_id, audit_error=err,
                             modules=entry.patch.modules if entry else (), **fields)

    def step_preflight(self) -> None:
        try:
            _audit.preflight()
        except AuditWriteError as exc:
            raise self.reject(f"nothing was rolled back: {exc.strerror}; fix the audit file and try again.",
                              Reason.AUDIT_UNWRITABLE, file=exc.path, error=exc) from None

    def step_select(self) -> None:
        try:
            self.entry = _rollback_target(self.patch_id)
        except PatchRejected as exc:
            raise self.reject(exc.message, exc.reason) from None
        self.log = _PatchLog(_log, {"patch_id": self.entry.patch.id})

    def step_announce(self) -> None:
        entry = self.entry
        assert entry is not None
        try:
            _audit.audit("rolling-back", entry.patch.id, self.actor, modules=list(entry.patch.modules),
                         outcome="rolling-back", reason=Reason.REQUESTED)
        except AuditWriteError as exc:
            raise self.reject(f"nothing was rolled back: {exc.strerror}; fix the audit file and try again.",
                              Reason.AUDIT_UNWRITABLE, file=exc.path, error=exc) from None

    def step_pause(self) -> None:
        assert self.entry is not None
        stack = contextlib.ExitStack()
        try:
            held = stack.enter_context(safepoints.pause(timeout=self.timeout))
        except safepoints.PauseTimeout as exc:
            raise self.reject(f"rollback of {self.entry.patch.id} refused: workers did not park within {self.timeout}s"
                              f" ({exc}); try again.", Reason.PAUSE_TIMEOUT) from None
        self.held = held
        self.paused = stack

    def step_undo(self) -> None:
        """Undo and record as one block: Ctrl-C waits until both are done."""
        entry = self.entry
        assert entry is not None
        with _sigint_deferred():
            started = time.perf_counter()
            try:
                entry.undo.undo()
            except UndoIncomplete as exc:
                self._close_pause()
                with _state_lock:
                    if entry in _applied:
                        _applied.remove(entry)
                    _record_locked(Rollback(entry.patch.id, entry.patch.modules, Reason.REQUESTED,
                                            f"INCOMPLETE: could not restore {len(exc.failures)} object(s): {exc}",
                                            0.0, time.time()))
                err = _audit_quietly("rollback-incomplete", entry.patch.id, self.actor, outcome="inconsistent",
                                     reason=Reason.REQUESTED, failures=list(exc.failures))
                raise RollbackIncomplete(
                    f"rollback of {entry.patch.id} could not restore {len(exc.failures)} object(s) ({exc});"
                    " the process may mix old and new code, restart it.", failures=exc.failures,
                    reason=Reason.REQUESTED, patch_id=entry.patch.id, modules=entry.patch.modules,
                    audit_error=err) from None
            self.stall = time.perf_counter() - started
            record = Rollback(entry.patch.id, entry.patch.modules, Reason.REQUESTED, "rolled back on request",
                              self.stall, time.time())
            with _state_lock:
                if entry in _applied:
                    _applied.remove(entry)
                _record_locked(record)
            self.record = record

    def step_resume(self) -> None:
        self._close_pause()
        assert self.record is not None and self.held is not None
        self.stall = self.held.stall_seconds or self.stall
        self.record = attrs.evolve(self.record, stall_seconds=self.stall)
        with _state_lock:
            for i in range(len(_history) - 1, -1, -1):
                item = _history[i]
                if isinstance(item, Rollback) and item.patch_id == self.record.patch_id:
                    _history[i] = self.record
                    break

    def step_commit(self) -> None:
        entry, record = self.entry, self.record
        assert entry is not None and record is not None
        err = _audit_quietly("rolled-back", entry.patch.id, self.actor, modules=list(entry.patch.modules),
                             outcome="rolled-back", reason=Reason.REQUESTED, stall_seconds=record.stall_seconds)
        self.log.info("rolled back on request (stall %.6fs)%s", record.stall_seconds,
                      f"; the audit file lacks this record ({err})" if err else "")

    def _close_pause(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None:
            paused.close()

    def fail(self, exc: BaseException) -> None:
        """Before the undo: nothing changed (refuse). After it: the rollback happened and is recorded."""
        self._close_pause()
        if self.record is not None:  # undone and recorded: whatever failed after that does not undo it
            if not isinstance(exc, Exception):
                exc.add_note(f"hotfix: patch {self.record.patch_id} was rolled back and recorded")
                raise exc
            self.log.error("after the rollback of %s: %s: %s", self.record.patch_id, type(exc).__name__, exc)
            return
        if isinstance(exc, HotfixError):
            raise exc
        refusal = self.reject(f"nothing was rolled back: interrupted by {type(exc).__name__}: {exc}",
                              Reason.INTERRUPTED, error=exc)
        if not isinstance(exc, Exception):
            exc.add_note(f"hotfix: {refusal.message}")
            raise exc
        raise refusal from exc


def _rollback_target(patch_id: str | None) -> _Applied:
    with _state_lock:
        done = [a for a in _applied if a.patch.status == PatchStatus.APPLIED]
        if not done and patch_id is None:
            raise PatchRejected("there is no applied patch to roll back.", reason=Reason.NOTHING_TO_ROLL_BACK)
        index = len(done) - 1 if patch_id is None else next(
            (i for i, a in enumerate(done) if a.patch.id == patch_id), None)
        if index is None:
            known = any(isinstance(h, Patch) and h.id == patch_id for h in _history)
            why = "it was already rolled back or is too old to roll back" if known else "no such patch"
            raise PatchRejected(f"patch {patch_id} cannot be rolled back: {why}.", patch_id=patch_id,
                                reason=Reason.NOT_ROLLBACKABLE if known else Reason.UNKNOWN_PATCH)
        entry = done[index]
        later = [a.patch.id for a in done[index + 1:] if set(a.patch.modules) & set(entry.patch.modules)]
        if later:
            raise PatchRejected(f"patch {entry.patch.id} has later patches on the same modules ({', '.join(later)});"
                                " roll those back first.", reason=Reason.LATER_PATCHES, patch_id=entry.patch.id,
                                modules=entry.patch.modules)
        return entry


def _hold(held: safepoints.PauseInfo, waited: tuple[WaitedThread, ...], wait_seconds: float) -> Hold:
    """Who the pause held (from safepoints, after it ended) and who the swap only waited for."""
    units = [h for h in held.held if h.unit]
    return Hold(workers=tuple(h.name for h in held.held if not h.unit), units=len(units),
                units_in_flight=sum(1 for h in units if h.how == "waited"), seconds=held.stall_seconds or 0.0,
                waited=waited, wait_seconds=wait_seconds)


def _wait_consistent(analyses: list[Plan], deadline: float, tx: _Apply) -> tuple[WaitedThread, ...]:
    """No running, unparked thread may be inside code that is about to be replaced.

    Returns the threads it waited for: each with where it was first seen and how long it took to leave."""
    replaced = CodeSet(c for a in analyses for c in a.replaced)
    if not replaced:
        return ()
    me = threading.get_ident()
    seen: dict[int, tuple[str, str, float]] = {}  # thread -> (name, where first seen, when first seen)
    left: dict[int, float] = {}  # thread -> when it was last seen out of the replaced code
    while True:
        safe = {w.thread_id for w in safepoints.statistics().workers if w.state in ("parked", "idle")}
        offenders = {}
        for tid, frame in sys._current_frames().items():
            if tid == me or tid in safe:
                continue
            f: types.FrameType | None = frame
            while f is not None:
                if f.f_code in replaced:
                    offenders[tid] = f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_qualname}"
                    break
                f = f.f_back
            del f
        del frame
        now = time.perf_counter()
        for tid in offenders:
            if tid not in seen:
                seen[tid] = (_thread_name(tid), offenders[tid], now)
            left.pop(tid, None)
        for tid in seen.keys() - offenders.keys():
            left.setdefault(tid, now)
        if not offenders:
            return tuple(WaitedThread(name, where, left[tid] - first) for tid, (name, where, first) in seen.items())
        if time.monotonic() >= deadline:
            raise tx.reject(
                "not patched: running threads are inside code that would change: "
                + "; ".join(f"thread {seen[tid][0]!r} at {where}" for tid, where in offenders.items())
                + "; register them as safepoints workers or retry when they are idle.", Reason.THREADS_IN_CODE)
        time.sleep(0.001)  # holding the pause; these threads need a moment to leave the code


def _thread_name(tid: int) -> str:
    for t in threading.enumerate():
        if t.ident == tid:
            return t.name
    return str(tid)


def _recheck_files(analyses: list[Plan], tx: _Apply) -> None:
    """Under the pause: the file must still be exactly the version verified."""
    for a in analyses:
        try:
            now = read_state(a.path)
        except SourceProblem as exc:
            raise tx.reject(f"{a.report.module} was not patched: the file changed during the apply ({exc.message});"
                            " try again.", Reason.FILE_CHANGED, file=a.path) from None
        if now != a.disk:
            raise tx.reject(f"{a.report.module} was not patched: the file changed on disk during the apply (sha256"
                            f" {now.sha256}); dry-run and try again.", Reason.FILE_CHANGED, file=now.path,
                            sha256=now.sha256)


# --------------------------------------------------------------------------- fork


def _reset_after_fork_in_child() -> None:
    """The child has one thread. Fresh locks; a transaction whose thread is gone is settled:
    applied and rollbackable if it had changed anything, else forgotten."""
    global _tx_lock, _state_lock, _current
    _state_lock = threading.Lock()
    _tx_lock = threading.Lock()
    tx = _current
    if tx is None:
        return
    if tx.thread == threading.get_ident():  # forked by the transaction's own thread (a check): it goes on
        _tx_lock.acquire()
        return
    _current = None
    entry = tx.entry
    if entry is None:
        return
    if len(entry.undo) == 0:
        _forget_locked(entry)
        return
    entry.patch = attrs.evolve(entry.patch, status=PatchStatus.APPLIED, finished_at=time.time())
    _replace_locked(entry.patch)
    if entry not in _applied:
        _applied.append(entry)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork_in_child)
