"""Every error hotfix raises. Each carries a typed ``reason``, the ``state`` it left, and fields.

The message is for people; code decides from ``reason``, ``state`` and the
fields (``hotfix._outcomes`` maps them to HTTP statuses and exit codes).
"""

from __future__ import annotations

from typing import Any

import attrs

from ._outcomes import Reason, State


@attrs.frozen
class Problem:
    """An assumption about the interpreter that does not hold (``UnsupportedInterpreter.problems``)."""

    assumption: str
    observed: str


class HotfixError(Exception):
    """Base class of hotfix's errors.

    ``reason`` (a ``hotfix.Reason``) says why, ``state`` (a ``hotfix.State``)
    what state the process is in. Fields, where relevant: ``patch_id``,
    ``modules``, ``check`` (the failing check's name), ``error`` (the
    exception that caused it), ``file`` and ``sha256``, ``audit_error`` (an
    audit write that failed on the way; the in-memory history is complete).
    ``report`` is the dry-run report, if one was made. The message is one
    sentence: what happened and what to do.
    """

    default_state = State.UNCHANGED

    def __init__(self, message: str, report: Any = None, *, reason: Reason, state: State | None = None,
                 patch_id: str | None = None, modules: tuple[str, ...] = (), check: str | None = None,
                 error: BaseException | None = None, file: str | None = None, sha256: str | None = None,
                 audit_error: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.report = report
        self.reason = Reason(reason)
        self.state = State(state) if state is not None else self.default_state
        self.patch_id = patch_id
        self.modules = tuple(modules)
        self.check = check
        self.error = error
        self.file = file
        self.sha256 = sha256
        self.audit_error = audit_error
        #: extra context (``traceback`` of a probation failure, ...); ``patch_id``/``reason`` mirrored
        self.details = {"patch_id": patch_id, "reason": self.reason.value, **details}


class PatchRejected(HotfixError):
    """Raised by ``apply``/``rollback`` when nothing was changed (``state`` is ``unchanged``).

    Verification blocked the change (or found it risky without
    ``allow_risky=True``), or a precondition failed: workers could not be
    parked in time, the file changed underneath, the module is unknown,
    module code raised during the swap, the audit file cannot be written, or
    another transaction was running. ``reason`` says which. The process is
    exactly as it was. Fix the cause named in the message and try again; a
    restart remains the fallback.
    """


class PatchRolledBack(HotfixError):
    """Raised by ``apply`` when the patch was applied and then undone (``state`` is ``rolled-back``).

    A check failed (raised, returned ``False`` or timed out), patched code
    raised during probation, the apply was interrupted after the swap
    (``KeyboardInterrupt``/``SystemExit`` are re-raised after the rollback
    instead of this), a rollback was requested during probation, or an
    audit write failed; hotfix restored the exact previous objects and
    recorded both the patch and its rollback. ``failure`` (also ``error``)
    holds the exception that triggered it, if any. Fix the source on disk
    and apply again.
    """

    default_state = State.ROLLED_BACK

    def __init__(self, message: str, report: Any = None, failure: BaseException | None = None, **details: Any) -> None:
        details.setdefault("error", failure)
        super().__init__(message, report, **details)
        self.failure = failure


class RollbackIncomplete(HotfixError):
    """Raised when undoing a patch could not restore every object (``state`` is ``incomplete``).

    hotfix restores entry by entry and keeps going past a failure, so all
    that could be restored was; ``failures`` lists what could not (an
    object that refused an attribute, a hook that raised). ``reason`` is why
    the patch was being undone. The process may mix old and new code:
    restart it. This should never happen; report it.
    """

    default_state = State.INCOMPLETE

    def __init__(self, message: str, report: Any = None, failures: tuple[str, ...] = (), **details: Any) -> None:
        super().__init__(message, report, **details)
        self.failures = tuple(failures)
