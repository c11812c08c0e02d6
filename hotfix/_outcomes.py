"""Outcomes as data: why a transaction ended, what state it left, and what each front end says.

Every refusal, rollback and failure carries a ``Reason`` and a ``State``
(``hotfix.HotfixError.reason`` / ``.state``). This module holds the one
table that turns them into the admin endpoint's HTTP status and body words,
the CLI's exit code and a rollout's per-process outcome. Nothing anywhere
decides from an exception's message text (``tests/hotfix/test_outcomes.py``
greps for it): a message can be reworded without changing a status code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class Reason(enum.StrEnum):
    """Why a transaction did not end as ``applied``/``unchanged`` (or why a rollback happened).

    Only reasons some code path produces are listed (a test enforces it).
    """

    # refused: nothing in the process changed (State.UNCHANGED)
    BLOCKED = "blocked"  # verification verdict blocked
    RISKY = "risky"  # verdict risky without allow_risky
    BUSY = "busy"  # another transaction is running
    UNKNOWN_MODULE = "unknown-module"  # not loaded, or not the loaded module
    INVALID_ARGUMENT = "invalid-argument"  # no module, malformed or miscounted expect_sha256
    SHA256_MISMATCH = "sha256-mismatch"  # the file is not the version pinned by expect_sha256
    FILE_CHANGED = "file-changed"  # the file changed between verification and the swap
    PAUSE_TIMEOUT = "pause-timeout"  # workers did not park in time
    THREADS_IN_CODE = "threads-in-code"  # running unparked threads inside code to be replaced
    SWAP_FAILED = "swap-failed"  # module code raised during the swap (undone under the same pause)
    VERIFY_FAILED = "verify-failed"  # the swapped code is not the compiled disk code (undone under the same pause)
    AUDIT_UNWRITABLE = "audit-unwritable"  # the audit file cannot be written (checked before the pause)
    NOTHING_TO_ROLL_BACK = "nothing-to-roll-back"
    UNKNOWN_PATCH = "unknown-patch"  # no such patch id in history
    NOT_ROLLBACKABLE = "not-rollbackable"  # already rolled back, or older than the rollback depth
    LATER_PATCHES = "later-patches"  # newer patches on the same modules must be rolled back first
    # applied, then undone (State.ROLLED_BACK); also Rollback.reason
    REQUESTED = "requested"  # rollback() / the endpoint / a rollout asked for it
    CHECK_FAILED = "check-failed"  # a check raised or returned False
    CHECK_TIMEOUT = "check-timeout"  # a check did not return within check_timeout
    PROBATION_FAILED = "probation-failed"  # patched code raised during the probation window
    INTERRUPTED = "interrupted"  # KeyboardInterrupt / SystemExit / an unexpected error (any state)
    AUDIT_FAILED = "audit-failed"  # an audit write failed after the swap: the patch does not stay unaudited


class State(enum.StrEnum):
    """The state a transaction left the process in."""

    UNCHANGED = "unchanged"  # nothing changed (a refusal)
    ROLLED_BACK = "rolled-back"  # applied, then every object restored; recorded in history
    APPLIED = "applied"  # in effect, recorded in history and rollbackable
    INCOMPLETE = "incomplete"  # some objects could not be restored: restart the process


class PatchStatus(enum.StrEnum):
    """``Patch.status``."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    PENDING = "pending"  # the transaction is between its first mutation and its end


REFUSED = frozenset({
    Reason.BLOCKED, Reason.RISKY, Reason.BUSY, Reason.UNKNOWN_MODULE, Reason.INVALID_ARGUMENT,
    Reason.SHA256_MISMATCH, Reason.FILE_CHANGED, Reason.PAUSE_TIMEOUT, Reason.THREADS_IN_CODE,
    Reason.SWAP_FAILED, Reason.VERIFY_FAILED, Reason.AUDIT_UNWRITABLE, Reason.NOTHING_TO_ROLL_BACK,
    Reason.UNKNOWN_PATCH, Reason.NOT_ROLLBACKABLE, Reason.LATER_PATCHES,
})
ROLLED_BACK = frozenset(Reason) - REFUSED

# --------------------------------------------------------------------------- CLI exit codes

EXIT_OK, EXIT_RISKY, EXIT_USAGE, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

#: Verdict -> exit code (dry-run, diff; a verdict of a rollout's preflight).
VERDICT_EXIT = {"unchanged": EXIT_OK, "safe": EXIT_OK, "risky": EXIT_RISKY, "blocked": EXIT_REJECTED}


@attrs.frozen
class Answer:
    """What the front ends say for one outcome."""

    http_status: int
    error: str  # the endpoint body's ``error`` (also the audit/rollout ``outcome`` word)
    reason: str | None  # the endpoint body's ``reason`` word (documented, stable)
    exit_code: int  # the CLI's exit code
    outcome: str  # a rollout's per-process outcome / the body's ``outcome``


def _refused(word: str, exit_code: int = EXIT_REJECTED) -> Answer:
    return Answer(409, "rejected", word, exit_code, "rejected")


def _rolled_back(reason: Reason) -> Answer:
    return Answer(409, "rolled-back", reason.value, EXIT_RISKY, "rolled-back")


#: THE table: reason -> answer, for every reason. The endpoint's ``reason`` words for refusals are
#: the documented five (blocked, risky, busy, precondition, nothing-to-roll-back); the fine-grained
#: reason travels alongside as ``reason_code``.
ANSWERS: Mapping[Reason, Answer] = {
    Reason.BLOCKED: _refused("blocked"),
    Reason.RISKY: _refused("risky", EXIT_RISKY),
    Reason.BUSY: _refused("busy"),
    Reason.UNKNOWN_MODULE: Answer(404, "unknown-module", None, EXIT_REJECTED, "unknown-module"),
    Reason.UNKNOWN_PATCH: Answer(404, "unknown-patch", None, EXIT_REJECTED, "unknown-patch"),
    Reason.NOTHING_TO_ROLL_BACK: _refused("nothing-to-roll-back"),
    **{r: _refused("precondition") for r in (
        Reason.INVALID_ARGUMENT, Reason.SHA256_MISMATCH, Reason.FILE_CHANGED, Reason.PAUSE_TIMEOUT,
        Reason.THREADS_IN_CODE, Reason.SWAP_FAILED, Reason.VERIFY_FAILED, Reason.AUDIT_UNWRITABLE,
        Reason.NOT_ROLLBACKABLE, Reason.LATER_PATCHES)},
    **{r: _rolled_back(r) for r in sorted(ROLLED_BACK)},
}
#: A rollback that could not restore everything (whatever the reason it was rolling back for).
INCOMPLETE = Answer(500, "rollback-incomplete", None, EXIT_UNREACHABLE, "rollback-incomplete")


def answer(reason: Reason, state: State) -> Answer:
    """The front ends' words for an outcome (``state`` INCOMPLETE overrides the reason)."""
    if state == State.INCOMPLETE:
        return INCOMPLETE
    if state == State.UNCHANGED and reason in ROLLED_BACK:  # interrupted before anything changed
        return _refused("precondition")
    return ANSWERS[reason]


#: HTTP statuses the endpoint itself produces for bad requests / auth (not transaction outcomes).
_EXIT_BY_STATUS = {400: EXIT_USAGE, 405: EXIT_USAGE, 413: EXIT_USAGE, 415: EXIT_USAGE,
                   401: EXIT_UNREACHABLE, 403: EXIT_UNREACHABLE}


def exit_code_for_reply(command: str, status: int, body: Mapping[str, object]) -> int:
    """The CLI exit code an endpoint answer means: the same table, read back from the body words."""
    if status == 200:
        if command == "dry-run":
            return VERDICT_EXIT.get(str(body.get("outcome")), EXIT_REJECTED)
        return EXIT_OK
    if status in _EXIT_BY_STATUS:
        return _EXIT_BY_STATUS[status]
    rows = (*ANSWERS.values(), INCOMPLETE)
    for exact in (True, False):  # the documented words first; then any reason word of that error
        for row in rows:
            if (row.http_status, row.error) == (status, body.get("error")) and (
                    not exact or row.reason in (None, body.get("reason"))):
                return row.exit_code if exact or row.error != "rejected" else EXIT_REJECTED
    return EXIT_UNREACHABLE  # not a hotfix answer (a proxy's 502, a 404 route): the process is not reachable as asked
