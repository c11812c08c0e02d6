"""Outcomes are data: one table maps (reason, state) to HTTP status, body words, exit code; no code reads messages."""

from __future__ import annotations

import re

import pytest

import hotfix
from hotfix import _outcomes
from hotfix._outcomes import (
    ANSWERS,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RISKY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Reason,
    State,
    answer,
    exit_code_for_reply,
)
from tests.helpers import REPO

PACKAGES = ("hotfix", "safepoints", "verification")


def _sources():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path, path.read_text()


# Decisions made from an exception's wording: `"busy" in exc.message`, `str(exc) == ...`,
# `exc.args[0].startswith(...)`, `re.search(..., str(err))`, a module-level *_TEXT constant matched later.
MESSAGE_DECISIONS = [
    re.compile(r"\bin\s+(?:\w+\.)+(?:message|args)\b(?!\.)"),
    re.compile(r"\bin\s+str\(\s*\w+\s*\)"),
    re.compile(r"(?:\.message|\.args(?:\[\d+\])?|str\(\s*\w+\s*\))\s*(?:==|!=|\.startswith|\.endswith|\.find|\.index|\.count)"),
    re.compile(r"re\.\w+\([^)]*(?:\.message|str\(\s*(?:exc|err|e|error)\s*\))"),
    re.compile(r"^\s*[A-Z_]+_TEXT\s*=\s*[\"']", re.M),
]


def test_no_code_decides_from_an_exception_message():
    hits = []
    for path, text in _sources():
        for pattern in MESSAGE_DECISIONS:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{path.relative_to(REPO)}:{line}: {text.splitlines()[line - 1].strip()}")
    assert hits == []


def test_the_grep_would_catch_the_old_text_matching():
    old = ['reason = "busy" if BUSY_TEXT in exc.message else "precondition"',
           'if "risky" in verdicts and not allow_risky and "risky" in exc.message:',
           'BUSY_TEXT = "another hotfix transaction is in progress"',
           'if str(exc).startswith("another"):']
    for line in old:
        assert any(p.search(line) for p in MESSAGE_DECISIONS), line


def test_every_reason_is_produced_by_some_code_and_has_one_answer():
    code = "\n".join(text for path, text in _sources() if path.name != "_outcomes.py")
    unused = [r for r in Reason if f"Reason.{r.name}" not in code]
    assert unused == []
    assert set(ANSWERS) == set(Reason)
    assert _outcomes.REFUSED | _outcomes.ROLLED_BACK == set(Reason)
    assert not _outcomes.REFUSED & _outcomes.ROLLED_BACK


# The documented cases (README "Status codes" and CLI "Exit codes"): pinned.
DOCUMENTED = {
    Reason.BLOCKED: (409, "rejected", "blocked", EXIT_REJECTED),
    Reason.RISKY: (409, "rejected", "risky", EXIT_RISKY),
    Reason.BUSY: (409, "rejected", "busy", EXIT_REJECTED),
    Reason.SHA256_MISMATCH: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.FILE_CHANGED: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.PAUSE_TIMEOUT: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.THREADS_IN_CODE: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.SWAP_FAILED: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.VERIFY_FAILED: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.AUDIT_UNWRITABLE: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.NOT_ROLLBACKABLE: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.LATER_PATCHES: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.INVALID_ARGUMENT: (409, "rejected", "precondition", EXIT_REJECTED),
    Reason.NOTHING_TO_ROLL_BACK: (409, "rejected", "nothing-to-roll-back", EXIT_REJECTED),
    Reason.UNKNOWN_MODULE: (404, "unknown-module", None, EXIT_REJECTED),
    Reason.UNKNOWN_PATCH: (404, "unknown-patch", None, EXIT_REJECTED),
    Reason.CHECK_FAILED: (409, "rolled-back", "check-failed", EXIT_RISKY),
    Reason.CHECK_TIMEOUT: (409, "rolled-back", "check-timeout", EXIT_RISKY),
    Reason.PROBATION_FAILED: (409, "rolled-back", "probation-failed", EXIT_RISKY),
    Reason.INTERRUPTED: (409, "rolled-back", "interrupted", EXIT_RISKY),
    Reason.AUDIT_FAILED: (409, "rolled-back", "audit-failed", EXIT_RISKY),
    Reason.REQUESTED: (409, "rolled-back", "requested", EXIT_RISKY),
}


@pytest.mark.parametrize("reason", list(Reason))
def test_the_table_pins_status_words_and_exit_code(reason):
    state = State.ROLLED_BACK if reason in _outcomes.ROLLED_BACK else State.UNCHANGED
    row = answer(reason, state)
    assert (row.http_status, row.error, row.reason, row.exit_code) == DOCUMENTED[reason]
    body = {"error": row.error, **({"reason": row.reason} if row.reason else {})}
    assert exit_code_for_reply("apply", row.http_status, body) == row.exit_code
    if reason in _outcomes.ROLLED_BACK:  # interrupted before anything changed: a refusal
        assert (answer(reason, State.UNCHANGED).http_status, answer(reason, State.UNCHANGED).reason) == (409, "precondition")
    incomplete = answer(reason, State.INCOMPLETE)
    assert (incomplete.http_status, incomplete.error) == (500, "rollback-incomplete")


@pytest.mark.parametrize(("command", "status", "body", "code"), [
    ("dry-run", 200, {"outcome": "unchanged"}, EXIT_OK),
    ("dry-run", 200, {"outcome": "safe"}, EXIT_OK),
    ("dry-run", 200, {"outcome": "risky"}, EXIT_RISKY),
    ("dry-run", 200, {"outcome": "blocked"}, EXIT_REJECTED),
    ("apply", 200, {"outcome": "applied"}, EXIT_OK),
    ("rollback", 200, {"outcome": "rolled-back"}, EXIT_OK),
    ("apply", 400, {"error": "bad-request"}, EXIT_USAGE),
    ("apply", 405, {"error": "method-not-allowed"}, EXIT_USAGE),
    ("apply", 413, {"error": "payload-too-large"}, EXIT_USAGE),
    ("apply", 415, {"error": "unsupported-media-type"}, EXIT_USAGE),
    ("status", 401, {"error": "unauthorized"}, EXIT_UNREACHABLE),
    ("status", 403, {"error": "forbidden"}, EXIT_UNREACHABLE),
    ("apply", 404, {"error": "not-found"}, EXIT_UNREACHABLE),
    ("apply", 500, {"error": "rollback-incomplete"}, EXIT_UNREACHABLE),
    ("apply", 500, {"error": "internal"}, EXIT_UNREACHABLE),
    ("apply", 502, {}, EXIT_UNREACHABLE),
    # an answer from a newer server with a reason word this client does not know
    ("apply", 409, {"error": "rejected", "reason": "something-new"}, EXIT_REJECTED),
    ("apply", 409, {"error": "rolled-back", "reason": "something-new"}, EXIT_RISKY),
])
def test_exit_codes_of_documented_answers(command, status, body, code):
    assert exit_code_for_reply(command, status, body) == code


def test_exceptions_carry_reason_state_and_fields():
    exc = hotfix.PatchRejected("m", reason=Reason.BUSY, patch_id="hf-1-1", modules=("a",))
    assert (exc.reason, exc.state, exc.patch_id, exc.modules) == (Reason.BUSY, State.UNCHANGED, "hf-1-1", ("a",))
    assert hotfix.PatchRolledBack("m", reason=Reason.CHECK_FAILED).state == State.ROLLED_BACK
    assert hotfix.RollbackIncomplete("m", reason=Reason.REQUESTED).state == State.INCOMPLETE
    with pytest.raises(TypeError):
        hotfix.PatchRejected("no reason")  # a reason is required


def test_apply_refusals_carry_typed_reasons(modules):
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply("no_such_module_loaded_anywhere")
    assert (info.value.reason, info.value.state, info.value.modules) == (
        Reason.UNKNOWN_MODULE, State.UNCHANGED, ("no_such_module_loaded_anywhere",))
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply([])
    assert info.value.reason == Reason.INVALID_ARGUMENT
    mod = modules.create("def f():\n    return 1\n")
    modules.write(mod, "def f():\n    return 2\n")
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply(mod, probation=0, expect_sha256="0" * 64)
    exc = info.value
    assert (exc.reason, exc.file, len(exc.sha256 or "")) == (Reason.SHA256_MISMATCH, mod.__file__, 64)
    assert isinstance(exc.patch_id, str) and exc.modules == (mod.__name__,)
    with pytest.raises(hotfix.PatchRolledBack) as info:
        hotfix.apply(mod, probation=0, checks=[lambda: False])
    exc = info.value
    assert (exc.reason, exc.state, exc.check) == (Reason.CHECK_FAILED, State.ROLLED_BACK, exc.check)
    assert exc.check and "lambda" in exc.check
    assert mod.f() == 1
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.rollback(exc.patch_id)
    assert info.value.reason == Reason.NOT_ROLLBACKABLE
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.rollback("hf-0-0-none")
    assert info.value.reason == Reason.UNKNOWN_PATCH
