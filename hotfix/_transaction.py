"""The transaction: verify, pause, re-check, swap, verify, resume, probation.

One transaction at a time (a second concurrent request is refused, not
queued). Every failure before the swap leaves the process untouched; every
failure after it is undone from the ``UndoLog`` under a pause, so the
process returns to the exact previous objects.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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

from ._audit import audit, configure_audit
from ._baseline import get_baseline, set_code_cache
from ._exceptions import PatchRejected, PatchRolledBack, RollbackIncomplete
from ._outcomes import PatchStatus, Reason
from ._probation import ProbationWatch, instrumented_twin
from ._records import Patch, Rollback, SwapEvent
from ._swap import Swapper, UndoIncomplete, UndoLog
from ._tracing import traced

DEFAULT_PROBATION = 3.0
DEFAULT_TIMEOUT = 2.0
#: How many applied patches can still be rolled back; older undo data is released.
ROLLBACK_DEPTH = 16
#: How many records history() keeps in memory (the audit log keeps everything).
HISTORY_LIMIT = 1000

_log = logging.getLogger("hotfix")
_tx_lock = threading.Lock()
_state_lock = threading.Lock()
_history: list[Patch | Rollback] = []
_applied: list[_Applied] = []  # rollback-able patches, oldest first
_ids = itertools.count(1)

Check = Callable[[], object]
Target = types.ModuleType | str


@attrs.define(eq=False)
class _Applied:
    patch: Patch
    undo: UndoLog


class _PatchLog(logging.LoggerAdapter):
    """Every record carries the patch id (``record.patch_id``), like a trace id."""

    def process(self, msg, kwargs):  # noqa: ANN001 - LoggerAdapter protocol
        kwargs.setdefault("extra", {})["patch_id"] = self.extra["patch_id"]
        return f"[{self.extra['patch_id']}] {msg}", kwargs


# --------------------------------------------------------------------------- public

_UNSET: object = object()


def configure(*, audit_log: object = _UNSET, code_cache: object = _UNSET, rollback_depth: int | None = None,
              history_limit: int | None = None) -> None:
    """Process-wide settings. ``audit_log``: path of an append-only JSONL file (``None`` turns it off);
    ``code_cache``: directory of the content-addressed code cache used by imports after
    ``install()`` (``None`` turns it off); ``rollback_depth``: how many applied patches stay
    rollback-able; ``history_limit``: records ``history()`` keeps in memory."""
    global ROLLBACK_DEPTH, HISTORY_LIMIT
    if audit_log is not _UNSET:
        configure_audit(audit_log)  # type: ignore[arg-type]
    if code_cache is not _UNSET:
        set_code_cache(code_cache)  # type: ignore[arg-type]
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
    return analyze(module, get_baseline(module.__name__), thread_states=_worker_states(), heap_scan=True,
                   sources=_running_source).report


def _running_source(name: str) -> str | None:
    base = get_baseline(name)
    return base.text if base is not None else None


def _worker_states() -> dict[int, str]:
    return {w.thread_id: w.state for w in safepoints.statistics().workers}


def history() -> list[Patch | Rollback]:
    """Every patch and rollback, oldest first."""
    with _state_lock:
        return list(_history)


@traced("hotfix.apply")
def apply(
    target: Target | Sequence[Target],
    *,
    checks: Iterable[Check] = (),
    probation: float = DEFAULT_PROBATION,
    timeout: float = DEFAULT_TIMEOUT,
    allow_risky: bool = False,
    expect_sha256: str | Sequence[str] | None = None,
    expected_exceptions: tuple[type[BaseException], ...] = (),
    actor: str | None = None,
) -> Patch:
    """Adopt the disk source of one module (or several, as one unit) in place.

    Returns after probation. Raises ``PatchRejected`` (nothing changed) or
    ``PatchRolledBack`` (applied, then undone). ``actor`` names who asked,
    for the audit log.
    """
    patch_id = _new_id()
    try:
        targets = [target] if isinstance(target, types.ModuleType | str) else list(target)
        if not targets:
            raise PatchRejected("no module given; pass a module or its name.", reason=Reason.INVALID_ARGUMENT)
        modules = [resolve_module(t) for t in targets]
        pins = _pins(expect_sha256, len(modules))
    except PatchRejected as exc:
        audit("rejected", patch_id, actor, modules=[str(target)], outcome="rejected", reason=exc.reason, detail=exc.message)
        raise
    if not _tx_lock.acquire(blocking=False):
        audit("rejected", patch_id, actor, modules=[m.__name__ for m in modules], outcome="busy", reason=Reason.BUSY)
        raise PatchRejected("another hotfix transaction is in progress; wait for it to finish and try again.",
                            reason=Reason.BUSY, modules=tuple(m.__name__ for m in modules))
    try:
        tx = _Transaction(patch_id, modules, actor)
        return tx.run(list(checks), probation, timeout, allow_risky, pins, expected_exceptions)
    finally:
        _tx_lock.release()


@traced("hotfix.rollback")
def rollback(patch_id: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, actor: str | None = None) -> Rollback:
    """Undo the latest applied patch (or ``patch_id``), restoring the exact previous objects."""
    if not _tx_lock.acquire(blocking=False):
        audit("rollback-rejected", patch_id, actor, outcome="busy", reason=Reason.BUSY)
        raise PatchRejected("another hotfix transaction is in progress; wait for it to finish and try again.",
                            reason=Reason.BUSY, patch_id=patch_id)
    try:
        try:
            entry = _rollback_target(patch_id)
        except PatchRejected as exc:
            audit("rollback-rejected", patch_id, actor, outcome="rejected", reason=exc.reason, detail=exc.message)
            raise
        plog = _PatchLog(_log, {"patch_id": entry.patch.id})
        try:
            stall = _undo_under_pause(entry.undo, timeout)
        except UndoIncomplete as exc:
            with _state_lock:
                _applied.remove(entry)
            audit("rollback-incomplete", entry.patch.id, actor, outcome="inconsistent", failures=list(exc.failures))
            raise RollbackIncomplete(
                f"rollback of {entry.patch.id} could not restore {len(exc.failures)} object(s) ({exc});"
                " the process may mix old and new code, restart it.", failures=exc.failures,
                reason=Reason.REQUESTED, patch_id=entry.patch.id, modules=entry.patch.modules) from None
        except safepoints.PauseTimeout as exc:
            audit("rollback-rejected", entry.patch.id, actor, outcome="rejected", reason=Reason.PAUSE_TIMEOUT, detail=str(exc))
            raise PatchRejected(f"rollback of {entry.patch.id} refused: workers did not park within {timeout}s ({exc}); try again.",
                                reason=Reason.PAUSE_TIMEOUT, patch_id=entry.patch.id, modules=entry.patch.modules) from None
        record = Rollback(entry.patch.id, entry.patch.modules, Reason.REQUESTED, "rolled back on request", stall, time.time())
        with _state_lock:
            _applied.remove(entry)
        _record(record)
        audit("rolled-back", entry.patch.id, actor, modules=list(entry.patch.modules), outcome="rolled-back",
              reason=Reason.REQUESTED, stall_seconds=stall)
        plog.info("rolled back on request (stall %.6fs)", stall)
        return record
    finally:
        _tx_lock.release()


def _rollback_target(patch_id: str | None) -> _Applied:
    with _state_lock:
        if not _applied and patch_id is None:
            raise PatchRejected("there is no applied patch to roll back.", reason=Reason.NOTHING_TO_ROLL_BACK)
        index = len(_applied) - 1 if patch_id is None else next(
            (i for i, a in enumerate(_applied) if a.patch.id == patch_id), None)
        if index is None:
            known = any(isinstance(h, Patch) and h.id == patch_id for h in _history)
            why = "it was already rolled back or is too old to roll back" if known else "no such patch"
            raise PatchRejected(f"patch {patch_id} cannot be rolled back: {why}.", patch_id=patch_id,
                                reason=Reason.NOT_ROLLBACKABLE if known else Reason.UNKNOWN_PATCH)
        entry = _applied[index]
        later = [a.patch.id for a in _applied[index + 1:] if set(a.patch.modules) & set(entry.patch.modules)]
        if later:
            raise PatchRejected(f"patch {entry.patch.id} has later patches on the same modules ({', '.join(later)}); roll those back first.",
                                reason=Reason.LATER_PATCHES, patch_id=entry.patch.id, modules=entry.patch.modules)
        return entry


# --------------------------------------------------------------------------- internals


def _pins(expect: str | Sequence[str] | None, n: int) -> list[str | None]:
    if expect is None:
        return [None] * n
    pins = [expect] if isinstance(expect, str) else list(expect)
    if len(pins) != n:
        raise PatchRejected(f"expect_sha256 has {len(pins)} values for {n} modules; give one per module.",
                            reason=Reason.INVALID_ARGUMENT)
    return pins


def _new_id() -> str:
    return f"hf-{os.getpid()}-{next(_ids)}"


def _slim(patch: Patch) -> Patch:
    """What history keeps: no reports (their diffs are the bulk), verdicts stay."""
    return attrs.evolve(patch, report=None, reports=())


def _record(item: Patch | Rollback) -> None:
    with _state_lock:
        _history.append(_slim(item) if isinstance(item, Patch) else item)
        del _history[:-HISTORY_LIMIT]


class _Transaction:
    """One apply, step by step; every step is logged and audited with the patch id."""

    def __init__(self, patch_id: str, modules: list[types.ModuleType], actor: str | None) -> None:
        self.id = patch_id
        self.modules = modules
        self.names = tuple(m.__name__ for m in modules)
        self.actor = actor
        self.log = _PatchLog(_log, {"patch_id": patch_id})
        self.report = None

    def audit(self, step: str, **fields: object) -> None:
        audit(step, self.id, self.actor, modules=list(self.names), **fields)

    def reject(self, message: str, reason: Reason, **fields: Any) -> PatchRejected:
        self.audit("rejected", outcome=reason, reason=reason, detail=message)
        self.log.warning("rejected: %s", message)
        return PatchRejected(message, self.report, reason=reason, patch_id=self.id, modules=self.names, **fields)

    def undo_or_fail(self, undo: UndoLog, reason: Reason, cause: BaseException | None = None) -> None:
        """Undo everything; if some entry cannot be restored, say so loudly: restart is the way out."""
        try:
            undo.undo()
        except UndoIncomplete as exc:
            self.audit("rollback-incomplete", outcome="inconsistent", reason=reason, failures=list(exc.failures))
            self.log.critical("could not restore everything after %s: %s", reason, exc)
            raise RollbackIncomplete(
                f"{', '.join(self.names)}: undoing the patch after {reason} could not restore {len(exc.failures)} object(s)"
                f" ({exc}); the process may mix old and new code, restart it.",
                self.report, failures=exc.failures, patch_id=self.id, reason=reason, modules=self.names) from cause

    def run(self, checks, probation, timeout, allow_risky, pins, expected) -> Patch:
        started = time.time()
        states = _worker_states()
        analyses = [analyze(m, get_baseline(m.__name__), thread_states=states, sources=_running_source)
                    for m in self.modules]
        reports = tuple(a.report for a in analyses)
        self.report = reports[0] if len(reports) == 1 else reports
        shas = tuple(a.disk.sha256 for a in analyses)
        self.audit("verified", verdicts=[r.verdict for r in reports], sha256=list(shas))
        who = ", ".join(self.names)
        for a, pin in zip(analyses, pins, strict=True):
            r = a.report
            if r.verdict == BLOCKED:
                worst = next(f for f in r.findings if f.severity == BLOCKED)
                raise self.reject(f"{r.module} was not patched: {worst.message}; fix the file and try again.", Reason.BLOCKED)
            if r.verdict == RISKY and not allow_risky:
                codes = sorted({f.code for f in r.findings if f.severity == RISKY})
                raise self.reject(
                    f"{r.module} was not patched: the change is risky ({', '.join(codes)}); review the dry run and pass allow_risky=True to apply it.",
                    Reason.RISKY)
            if pin is not None and a.disk.sha256 != pin:
                actual = a.disk.sha256 or "unreadable"
                raise self.reject(f"{r.module} was not patched: the file's sha256 is {actual[:12]}, not the reviewed {pin[:12]}; dry-run again.",
                                  Reason.SHA256_MISMATCH, file=a.path, sha256=actual)
        if all(r.verdict == UNCHANGED for r in reports):
            patch = Patch(self.id, PatchStatus.UNCHANGED, self.names, self.report, reports, (), 0.0, started, None, time.time(), 0.0, shas)
            _record(patch)
            self.audit("unchanged", outcome="unchanged", sha256=list(shas))
            self.log.info("%s unchanged: nothing to apply", who)
            return patch
        work = [a for a in analyses if a.report.verdict != UNCHANGED]
        self.log.info("applying %s (verdicts %s)", who, ", ".join(r.verdict for r in reports))
        undo = UndoLog()
        events: list[SwapEvent] = []
        try:
            with safepoints.pause(timeout=timeout) as held:
                _wait_consistent(work, started + timeout, self)
                _recheck_files(work, self)
                try:
                    for a in work:
                        events.extend(Swapper(a, undo).run())
                except BaseException as exc:
                    self.undo_or_fail(undo, Reason.SWAP_FAILED, exc)
                    raise self.reject(
                        f"{who} was not patched: {type(exc).__name__} during the swap: {exc}; nothing was changed, fix the source and try again.",
                        Reason.SWAP_FAILED, error=exc) from exc
                problems = [p for a in work for p in verify_swap(a)]
                if problems:
                    self.undo_or_fail(undo, Reason.VERIFY_FAILED)
                    raise self.reject(f"{who} was not patched: the swapped code is not the compiled disk code ({'; '.join(problems)});"
                                      " nothing was changed; report this.", Reason.VERIFY_FAILED)
        except safepoints.PauseTimeout as exc:
            raise self.reject(f"{who} was not patched: workers did not park within {timeout}s: {exc}", Reason.PAUSE_TIMEOUT) from None
        applied_at = time.time()
        stall = held.stall_seconds
        self.audit("swapped", outcome="swapped", stall_seconds=stall, events=len(events), sha256=list(shas))
        self.log.info("swapped %d definitions (workers held %.6fs)", len(events), stall)
        patch = Patch(self.id, PatchStatus.APPLIED, self.names, self.report, reports, tuple(events), stall, started, applied_at, 0.0, 0.0, shas)
        failure = _probation(work, checks, probation, expected, self.log)
        finished = time.time()
        patch = attrs.evolve(patch, finished_at=finished, probation_seconds=finished - applied_at)
        if failure is not None:
            reason, detail, exc, formatted, check = failure
            try:
                rb_stall = _automatic_undo(undo, max(timeout, 1.0), self.log)
            except UndoIncomplete as incomplete:
                undo = UndoLog()  # everything restorable was restored; report what was not
                self.audit("rollback-incomplete", outcome="inconsistent", reason=reason,
                           failures=list(incomplete.failures))
                raise RollbackIncomplete(
                    f"{who} was patched and the automatic rollback after {reason} could not restore"
                    f" {len(incomplete.failures)} object(s) ({incomplete}); restart the process.",
                    self.report, failures=incomplete.failures, patch_id=self.id, reason=reason, modules=self.names) from exc
            _record(patch)
            _record(Rollback(self.id, self.names, reason, detail, rb_stall, time.time()))
            self.audit("rolled-back", outcome="rolled-back", reason=reason, detail=detail, stall_seconds=rb_stall)
            self.log.warning("rolled back: %s", detail)
            raise PatchRolledBack(
                f"{who} was patched and rolled back: {detail}; the previous code is running, fix the source and apply again.",
                self.report, failure=exc, patch_id=self.id, reason=reason, modules=self.names, check=check,
                traceback=formatted)
        _record(patch)
        with _state_lock:
            _applied.append(_Applied(patch, undo))
            del _applied[:-ROLLBACK_DEPTH]  # older versions can no longer be rolled back to: release them
        self.audit("applied", outcome="applied", sha256=list(shas), stall_seconds=stall)
        self.log.info("applied; probation passed")
        return patch


def _wait_consistent(analyses: list[Plan], deadline: float, tx: _Transaction) -> None:
    """No running, unparked thread may be inside code that is about to be replaced."""
    replaced = CodeSet(c for a in analyses for c in a.replaced)
    if not replaced:
        return
    me = threading.get_ident()
    while True:
        safe = {w.thread_id for w in safepoints.statistics().workers if w.state in ("parked", "idle")}
        offenders = []
        for tid, frame in sys._current_frames().items():
            if tid == me or tid in safe:
                continue
            f = frame
            while f is not None:
                if f.f_code in replaced:
                    offenders.append(f"{_thread_name(tid)} at {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_qualname}")
                    break
                f = f.f_back
            del f
        del frame
        if not offenders:
            return
        if time.time() >= deadline:
            raise tx.reject(
                "not patched: running threads are inside code that would change: " + "; ".join(offenders)
                + "; register them as safepoints workers or retry when they are idle.", Reason.THREADS_IN_CODE)
        time.sleep(0.001)  # holding the pause; these threads need a moment to leave the code


def _thread_name(tid: int) -> str:
    for t in threading.enumerate():
        if t.ident == tid:
            return f"thread {t.name!r}"
    return f"thread {tid}"


def _recheck_files(analyses: list[Plan], tx: _Transaction) -> None:
    """Under the pause: the file must still be exactly the version verified."""
    for a in analyses:
        try:
            now = read_state(a.path)
        except SourceProblem as exc:
            raise tx.reject(f"{a.report.module} was not patched: the file changed during the apply ({exc.message}); try again.",
                            Reason.FILE_CHANGED, file=a.path) from None
        if now != a.disk:
            raise tx.reject(f"{a.report.module} was not patched: the file changed on disk during the apply (sha256 {now.sha256[:12]}); dry-run and try again.",
                            Reason.FILE_CHANGED, file=now.path, sha256=now.sha256)


def _probation(analyses, checks, probation, expected, plog):
    """Run checks, then watch. Returns (reason, detail, exception, traceback text) on failure, else None.

    Watched: the code whose behaviour the patch changed (changed, re-created
    or added definitions, retargeted closures), not functions that only
    moved and not the rest of the module.
    """
    if probation <= 0 and not checks:
        return None
    codes = CodeSet(c for a in analyses for c in a.watched)
    twins = []
    use_twins = not hasattr(sys, "monitoring")
    for a in analyses:
        for probe in a.probes if use_twins else ():
            twin = instrumented_twin(probe.node, probe.scope, a.path, a.compile_flags, probe.code)
            if twin is not None:
                twins.extend((f, probe.code, twin) for f in probe.live)
    codes.update(t for _, _, t in twins)
    with ProbationWatch(codes, expected, twins) as watch:
        for check in checks:
            name = getattr(check, "__qualname__", repr(check))
            try:
                ok = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is the signal we want
                return Reason.CHECK_FAILED, f"check {name} raised {type(exc).__name__}: {exc}", exc, _format(exc), name
            if ok is False:
                return Reason.CHECK_FAILED, f"check {name} returned False", None, None, name
        if not watch.wait(probation) or watch.failed.is_set():
            exc = watch.failure
            return (Reason.PROBATION_FAILED, f"{type(exc).__name__}: {exc} escaped {watch.where} during probation", exc,
                    watch.formatted, None)
    plog.debug("probation passed (%s, %.1fs)", watch.mechanism, probation)
    return None


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def _undo_under_pause(undo: UndoLog, timeout: float) -> float:
    with safepoints.pause(timeout=timeout) as held:
        undo.undo()
    return held.stall_seconds


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

