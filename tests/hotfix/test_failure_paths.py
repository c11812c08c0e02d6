"""Regression tests for the failure paths of issue 12 (defects 1-7): each failed on the code before it.

Real failures wherever the machine allows: a full disk is ``/dev/full`` (every
write fails with ENOSPC), a short write is ``RLIMIT_FSIZE`` in a subprocess,
Ctrl-C is a real SIGINT, a fork is ``os.fork()``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import hotfix
import safepoints
from hotfix import Reason, State, _events
from tests.helpers import REPO, assert_same, snapshot

V1 = "STATE = {'n': 1}\n\n\ndef f():\n    return 1\n"
V2 = "STATE = {'n': 1}\n\n\ndef f():\n    return 2\n"
FULL = "/dev/full"
needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full")


def _long_checks() -> dict:
    """A check timeout longer than any test's hang (the apply of old versions had none: this stays faithful there)."""
    return {"check_timeout": 120} if "check_timeout" in inspect.signature(hotfix.apply).parameters else {}


def _records(path) -> list[dict]:
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    assert lines[-1] == b""
    return [json.loads(line) for line in lines[:-1]]


@pytest.fixture
def audit_link(tmp_path):
    """An audit path that is a symlink: point it at /dev/full to fill the disk mid-transaction."""
    real = tmp_path / "audit-real.jsonl"
    link = tmp_path / "audit.jsonl"
    link.symlink_to(real)
    hotfix.configure(audit_log=link)

    def fill_disk() -> None:
        link.unlink()
        link.symlink_to(FULL)

    yield link, real, fill_disk
    hotfix.configure(audit_log=None)


# --------------------------------------------------------------------------- defect 1


@needs_dev_full
def test_defect1_disk_full_after_the_swap_rolls_back_and_records(modules, audit_link):
    _link, real, fill_disk = audit_link
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)

    def check() -> bool:  # runs after the swap: the disk fills up now
        fill_disk()
        return True

    with pytest.raises(hotfix.PatchRolledBack) as info:
        hotfix.apply(mod, probation=0, checks=[check])
    exc = info.value
    assert (exc.reason, exc.state) == (Reason.AUDIT_FAILED, State.ROLLED_BACK)
    assert exc.audit_error and "No space left" in exc.audit_error
    assert_same(before, snapshot(mod))
    assert mod.f() == 1
    kinds = [(type(h).__name__, getattr(h, "reason", None)) for h in hotfix.history() if
             getattr(h, "id", getattr(h, "patch_id", None)) == exc.patch_id]
    assert kinds == [("Patch", None), ("Rollback", Reason.AUDIT_FAILED)]
    records = _records(real)  # what was written before the disk filled parses line by line
    assert [r["step"] for r in records if r["patch_id"] == exc.patch_id] == ["verified", "swapped"]


@needs_dev_full
def test_defect1_audit_unwritable_is_refused_before_the_pause(modules, audit_link):
    link, _real, fill_disk = audit_link
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)
    link.unlink()
    link.symlink_to(link.parent / "no-such-dir" / "x" / "audit.jsonl")
    (link.parent / "no-such-dir").write_text("a file where a directory should be")
    pauses = safepoints.statistics().pauses
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply(mod, probation=0)
    assert (info.value.reason, info.value.state) == (Reason.AUDIT_UNWRITABLE, State.UNCHANGED)
    assert info.value.file == str(link)
    assert str(link) in info.value.message
    assert safepoints.statistics().pauses == pauses  # refused before anything was paused
    assert_same(before, snapshot(mod))


SHORT_WRITE = r"""
import json, os, resource, signal, sys, importlib
sys.path[:0] = [{repo!r}, {mods!r}]
import hotfix
hotfix.install()
mod = importlib.import_module({name!r})
audit = {audit!r}
hotfix.configure(audit_log=audit)
with open({path!r}, "w") as fh:
    fh.write({v2!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from hotfix import _audit

def limit(step):  # just before the 'applied' record: the file may grow by 40 bytes more, no further
    if step == "audit:applied":
        size = os.path.getsize(audit)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))

_audit.fault_hook = limit
try:
    hotfix.apply(mod, probation=0)
except hotfix.PatchRolledBack as exc:
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print(json.dumps({{"reason": exc.reason, "f": mod.f(), "audit_error": exc.audit_error}}))
"""


def test_defect1_a_short_write_leaves_no_partial_line(modules, tmp_path):
    mod = modules.create(V1)
    audit = tmp_path / "audit.jsonl"
    script = SHORT_WRITE.format(repo=str(REPO), mods=str(modules.dir), name=mod.__name__, audit=str(audit),
                                path=mod.__file__, v2=V2)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["reason"], out["f"]) == ("audit-failed", 1), proc.stderr
    records = _records(audit)  # every line whole: the short write was truncated back
    # the 'applied' line (and the 'rolled-back' one after it) came up short and were truncated back
    assert [r["step"] for r in records] == ["verified", "swapped"]
    assert out["audit_error"]


# --------------------------------------------------------------------------- defect 2


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_defect2_base_exception_from_a_check_rolls_back_then_reraises(modules, raised):
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)

    def check():
        raise raised()

    with pytest.raises(raised) as info:
        hotfix.apply(mod, probation=0, checks=[check])
    assert any("rolled back" in n for n in info.value.__notes__)
    assert_same(before, snapshot(mod))
    last = hotfix.history()[-1]
    assert isinstance(last, hotfix.Rollback) and last.reason == Reason.INTERRUPTED
    with pytest.raises(hotfix.PatchRejected) as refused:  # nothing is left to roll back, nothing is stuck
        hotfix.rollback(last.patch_id)
    assert refused.value.reason == Reason.NOT_ROLLBACKABLE


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_defect2_ctrl_c_during_probation_rolls_back_then_reraises(modules):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)

    def on_step(event: _events.StepEvent) -> None:
        if (event.step, event.phase) == ("probation", "enter"):
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, delivered in the main thread

    unsubscribe = _events.subscribe(on_step)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            hotfix.apply(mod, probation=30)
    finally:
        signal.signal(signal.SIGINT, previous)
        unsubscribe()
    assert_same(before, snapshot(mod))
    last = hotfix.history()[-1]
    assert isinstance(last, hotfix.Rollback) and last.reason == Reason.INTERRUPTED


# --------------------------------------------------------------------------- defect 3


@needs_dev_full
def test_defect3_a_requested_rollback_whose_audit_fails_still_reports_success(modules, audit_link):
    _link, real, fill_disk = audit_link
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)
    patch = hotfix.apply(mod, probation=0)
    unsubscribe = _events.subscribe(
        lambda e: fill_disk() if (e.kind, e.step, e.phase) == ("rollback", "pause", "enter") else None)
    try:
        record = hotfix.rollback(patch.id)  # not an OSError: the rollback happened
    finally:
        unsubscribe()
    assert (record.patch_id, record.reason) == (patch.id, Reason.REQUESTED)
    assert_same(before, snapshot(mod))
    steps = [r["step"] for r in _records(real) if r["patch_id"] == patch.id]
    assert steps == ["verified", "swapped", "applied", "rolling-back"]  # announced before the undo


@needs_dev_full
def test_defect3_disk_full_during_an_automatic_rollback_says_rolled_back(modules, audit_link):
    _link, _real, fill_disk = audit_link
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)

    def failing_check() -> bool:
        fill_disk()
        return False

    with pytest.raises(hotfix.PatchRolledBack) as info:
        hotfix.apply(mod, probation=0, checks=[failing_check])
    assert (info.value.reason, info.value.state) == (Reason.CHECK_FAILED, State.ROLLED_BACK)
    assert info.value.audit_error
    assert_same(before, snapshot(mod))


# --------------------------------------------------------------------------- defect 4


def test_defect4_migrate_hook_that_rebinds_then_raises_leaves_the_namespace(modules):
    mod = modules.create(V1)
    state = mod.STATE
    before = snapshot(mod)
    modules.write(mod, V2 + textwrap.dedent("""

        def __hotfix_migrate__(old):
            global STATE, EXTRA
            STATE = {"n": 2}
            EXTRA = 1
            raise ValueError("half-way")
        """))
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply(mod, probation=0)
    assert (info.value.reason, info.value.state) == (Reason.SWAP_FAILED, State.UNCHANGED)
    assert mod.STATE is state and not hasattr(mod, "EXTRA")
    assert_same(before, snapshot(mod))


# --------------------------------------------------------------------------- defect 5


def test_defect5_probation_sees_the_first_call_after_the_resume(modules):
    mod = modules.create(V1)
    modules.write(mod, "STATE = {'n': 1}\n\n\ndef f():\n    raise KeyError('first call')\n")
    called = threading.Event()
    stop = threading.Event()

    def worker():
        with safepoints.worker("first-call"):
            while not stop.is_set():
                safepoints.checkpoint()  # parked here during the swap; resumes straight into f()
                try:
                    mod.f()
                except KeyError:
                    called.set()
                    return

    class HoldAfterSwap(logging.Handler):
        """Hold the transaction right after the workers resume until the worker's first call failed."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(("[", "swapped")) and "swapped" in record.getMessage():
                called.wait(10)

    handler = HoldAfterSwap()
    logging.getLogger("hotfix").addHandler(handler)
    old_level = logging.getLogger("hotfix").level
    logging.getLogger("hotfix").setLevel(logging.INFO)
    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        with pytest.raises(hotfix.PatchRolledBack) as info:
            hotfix.apply(mod, probation=0.2)
    finally:
        stop.set()
        logging.getLogger("hotfix").removeHandler(handler)
        logging.getLogger("hotfix").setLevel(old_level)
        t.join(10)
    assert called.is_set()
    assert info.value.reason == Reason.PROBATION_FAILED
    assert isinstance(info.value.failure, KeyError)
    assert mod.f() == 1


# --------------------------------------------------------------------------- defect 6


def test_defect6_a_hanging_check_times_out_and_rolls_back(modules):
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)
    release = threading.Event()

    def hangs() -> bool:
        return release.wait(60)

    try:
        with pytest.raises(hotfix.PatchRolledBack) as info:
            hotfix.apply(mod, probation=0, checks=[hangs], check_timeout=0.2)
    finally:
        release.set()
    assert (info.value.reason, info.value.check) == (Reason.CHECK_TIMEOUT, hangs.__qualname__)
    assert_same(before, snapshot(mod))


def test_defect6_rollback_during_a_hanging_check_rolls_back_instead_of_busy(modules):
    mod = modules.create(V1)
    before = snapshot(mod)
    modules.write(mod, V2)
    entered, release = threading.Event(), threading.Event()

    def hangs() -> bool:
        entered.set()
        return release.wait(60)

    outcome: list[BaseException] = []

    def run_apply() -> None:
        try:
            hotfix.apply(mod, probation=0, checks=[hangs], **_long_checks())
        except BaseException as exc:  # inspected below
            outcome.append(exc)

    t = threading.Thread(target=run_apply)
    t.start()
    try:
        assert entered.wait(30)
        assert mod.f() == 2  # in its checks: live
        record = hotfix.rollback(actor="operator")
    finally:
        release.set()
        t.join(30)
    assert record.reason == Reason.REQUESTED
    assert isinstance(outcome[0], hotfix.PatchRolledBack) and outcome[0].reason == Reason.REQUESTED
    assert_same(before, snapshot(mod))


# --------------------------------------------------------------------------- defect 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_defect7_fork_during_a_transaction_leaves_the_child_able_to_apply(modules):
    busy = modules.create(V1)
    other = modules.create(V1)
    modules.write(busy, V2)
    modules.write(other, V2)
    entered, release = threading.Event(), threading.Event()

    def hangs() -> bool:
        entered.set()
        return release.wait(60)

    t = threading.Thread(target=lambda: hotfix.apply(busy, probation=0, checks=[hangs], **_long_checks()))
    t.start()
    try:
        assert entered.wait(30)
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            pid = os.fork()
        if pid == 0:  # the child: one thread, no transaction running
            os.close(r)
            try:
                patch = hotfix.apply(other, probation=0)
                with safepoints.pause(timeout=5):
                    pass
                pending = [h.status for h in hotfix.history() if isinstance(h, hotfix.Patch) and h.modules == (busy.__name__,)]
                result = {"status": patch.status.value, "f": other.f(), "busy": pending}
            except BaseException as exc:  # reported to the parent
                result = {"error": repr(exc)}
            os.write(w, json.dumps(result).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            child = json.loads(fh.read() or "{}")
        os.waitpid(pid, 0)
    finally:
        release.set()
        t.join(30)
    # the child applied; the transaction that was running in the parent is settled there as applied
    assert child == {"status": "applied", "f": 2, "busy": ["applied"]}, child
    assert other.f() == 1  # the parent is untouched by the child's apply
