"""Every error hotfix raises. Each carries the verification ``report``."""

from __future__ import annotations

from typing import Any


class HotfixError(Exception):
    """Base class of hotfix's errors. ``report`` is the dry-run report, if one was made.

    The message is one sentence: what happened and what to do.
    """

    def __init__(self, message: str, report: Any = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.report = report
        self.details = details


class PatchRejected(HotfixError):
    """Raised by ``apply``/``rollback`` when nothing was changed.

    Verification blocked the change (or found it risky without
    ``allow_risky=True``), or a precondition failed: workers could not be
    parked in time, the file changed underneath, the module is unknown,
    module code raised during the swap, or another transaction was running.
    The process is exactly as it was. Fix the cause named in the message and
    try again; a restart remains the fallback.
    """


class PatchRolledBack(HotfixError):
    """Raised by ``apply`` when the patch was applied and then undone.

    A check failed (raised or returned ``False``) or patched code raised
    during probation; hotfix restored the exact previous objects. The
    ``failure`` attribute holds the exception (or a description) that
    triggered it. Fix the source on disk and apply again.
    """

    def __init__(self, message: str, report: Any = None, failure: Any = None, **details: Any) -> None:
        super().__init__(message, report, **details)
        self.failure = failure


class RollbackIncomplete(HotfixError):
    """Raised when undoing a patch could not restore every object.

    hotfix restores entry by entry and keeps going past a failure, so all
    that could be restored was; ``failures`` lists what could not (an
    object that refused an attribute, a hook that raised). The process may
    mix old and new code: restart it. This should never happen; report it.
    """

    def __init__(self, message: str, report: Any = None, failures: tuple[str, ...] = (), **details: Any) -> None:
        super().__init__(message, report, **details)
        self.failures = failures
