"""Fault injection at every step of apply and rollback: each ends in a defined, recorded state.

The steps come from the code (``APPLY_STEPS``, ``ROLLBACK_STEPS``, and the audit
writes a real apply makes), so a step added later is covered without touching
this file. After each fault the process is either exactly as before (same code
objects, namespace, ``sys.modules`` entry, cache wrappers) or the patch is fully
in effect, recorded and rollbackable; ``history()`` and the audit file agree, and
the audit file parses line by line.
"""

from __future__ import annotations

import errno
import json

import pytest

import hotfix
from hotfix import _audit, _events, _transaction
from hotfix._outcomes import State
from tests.helpers import assert_same, snapshot

V1 = """\
import functools

STATE = {"version": 1}


@functools.lru_cache(maxsize=None)
def cached(x):
    return x * 10


def f():
    return 1


class Service:
    def handle(self):
        return "old"
"""

V2 = """\
import functools

STATE = {"version": 1}


@functools.lru_cache(maxsize=None)
def cached(x):
    return x * 20


def f():
    return 2


def added():
    return "new"


class Service:
    def handle(self):
        return "new"


def __hotfix_migrate__(old):
    global MIGRATED
    MIGRATED = True
    fault = old.get("_FAULT")
    if fault is not None:
        raise fault
"""

FAULTS = {
    "Exception": lambda: RuntimeError("injected"),
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "OSError-ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device (injected)"),
}


def _recorded_points(modules, tmp_path) -> list[str]:
    """Every fault point a successful apply + rollback passes, in order (steps and audit writes)."""
    seen: list[str] = []
    mod = modules.create(V1)
    modules.write(mod, V2)
    hotfix.configure(audit_log=tmp_path / "probe-audit.jsonl")
    _events.fault_hook = _audit.fault_hook = seen.append
    try:
        patch = hotfix.apply(mod, probation=0.01, checks=[lambda: True])
        hotfix.rollback(patch.id)
    finally:
        _events.fault_hook = _audit.fault_hook = None
        hotfix.configure(audit_log=None)
    return seen


@pytest.fixture
def audited(tmp_path):
    path = tmp_path / "audit.jsonl"
    hotfix.configure(audit_log=path)
    yield path
    hotfix.configure(audit_log=None)
    _events.fault_hook = _audit.fault_hook = None


def _inject(point: str, make):
    fired = []

    def hook(name: str) -> None:
        if name == point and not fired:
            fired.append(name)
            raise make()

    _events.fault_hook = _audit.fault_hook = hook
    return fired


def _records(path) -> list[dict]:
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the audit file ends with a whole line"
    return [json.loads(line) for line in lines[:-1]]  # every line parses on its own


def _in_effect_by_history(patch_id: str) -> bool:
    items = hotfix.history()
    applied = any(isinstance(h, hotfix.Patch) and h.id == patch_id and h.status == hotfix.PatchStatus.APPLIED
                  for h in items)
    undone = any(isinstance(h, hotfix.Rollback) and h.patch_id == patch_id for h in items)
    return applied and not undone


def _in_effect_by_audit(records: list[dict], patch_id: str) -> bool:
    """Read the audit file as an operator would: the last word about the patch decides."""
    in_effect = False
    for r in records:
        if r.get("patch_id") != patch_id:
            continue
        if r["step"] == "applied":
            in_effect = True
        elif r["step"] in ("rolling-back", "rolled-back", "rollback-incomplete", "rejected"):
            in_effect = False
        elif r["step"] == "rollback-rejected" and any(x.get("patch_id") == patch_id and x["step"] == "applied"
                                                      for x in records):
            in_effect = True  # a rollback announced, then refused: the patch is still applied
    return in_effect


def _assert_defined_state(mod, before, audit_path, patch_id, cache_wrapper):
    """Exactly as before, or fully in effect + recorded + rollbackable; history and audit agree."""
    records = _records(audit_path)
    assert _transaction._tx_lock.acquire(blocking=False), "the transaction lock was released"
    _transaction._tx_lock.release()
    assert mod.cached is cache_wrapper
    in_effect = _in_effect_by_history(patch_id)
    assert in_effect == _in_effect_by_audit(records, patch_id), (patch_id, records)
    if in_effect:
        assert (mod.f(), mod.Service().handle(), mod.cached(1), mod.added()) == (2, "new", 20, "new")
        hotfix.rollback(patch_id)
    assert_same(before, snapshot(mod))
    assert (mod.f(), mod.Service().handle(), mod.cached(1)) == (1, "old", 10)
    assert not any(isinstance(h, hotfix.Patch) and h.status == hotfix.PatchStatus.PENDING for h in hotfix.history())
    return in_effect


def _expect_raised(exc: BaseException, kind: str) -> None:
    if kind in ("KeyboardInterrupt", "SystemExit"):
        assert type(exc).__name__ == kind  # re-raised as itself, after the state was settled
        assert any("hotfix:" in note for note in getattr(exc, "__notes__", [])), "the note says what state it left"
    else:
        assert isinstance(exc, hotfix.HotfixError), repr(exc)
        assert exc.state in (State.UNCHANGED, State.ROLLED_BACK)
        assert exc.reason is not None


def test_every_step_goes_through_the_fault_hook(modules, tmp_path):
    points = _recorded_points(modules, tmp_path)
    steps = [p for p in points if not p.startswith("audit:")]
    assert steps == [f"apply:{s}" for s in _transaction.APPLY_STEPS] + [
        f"rollback:{s}" for s in _transaction.ROLLBACK_STEPS]
    assert {"audit:verified", "audit:swapped", "audit:applied", "audit:rolled-back"} <= set(points)


def _apply_points():
    return [f"apply:{s}" for s in _transaction.APPLY_STEPS]


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("point", _apply_points())
def test_fault_at_each_apply_step(modules, audited, point, kind):
    mod = modules.create(V1)
    wrapper = mod.cached
    assert mod.cached(1) == 10
    before = snapshot(mod)
    modules.write(mod, V2)
    fired = _inject(point, FAULTS[kind])
    with pytest.raises(BaseException) as info:  # the type is checked below, per fault kind
        hotfix.apply(mod, probation=0.01, checks=[lambda: mod.f() == 2])
    _events.fault_hook = _audit.fault_hook = None
    assert fired == [point]
    _expect_raised(info.value, kind)
    patch_id = getattr(info.value, "patch_id", None) or _last_patch_id(audited)
    _assert_defined_state(mod, before, audited, patch_id, wrapper)


def _last_patch_id(audit_path) -> str:
    return [r for r in _records(audit_path) if r.get("patch_id")][-1]["patch_id"]


def test_fault_points_inside_audit_writes_are_enumerated(modules, tmp_path):
    audit_points = [p for p in _recorded_points(modules, tmp_path) if p.startswith("audit:")]
    assert audit_points == ["audit:verified", "audit:swapped", "audit:applied", "audit:rolling-back",
                            "audit:rolled-back"]


AUDIT_APPLY_POINTS = ["audit:verified", "audit:swapped", "audit:applied"]


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("point", AUDIT_APPLY_POINTS)
def test_fault_inside_each_audit_write_of_apply(modules, audited, point, kind):
    mod = modules.create(V1)
    wrapper = mod.cached
    before = snapshot(mod)
    modules.write(mod, V2)
    _inject(point, FAULTS[kind])
    with pytest.raises(BaseException) as info:  # checked below
        hotfix.apply(mod, probation=0.01)
    _events.fault_hook = _audit.fault_hook = None
    _expect_raised(info.value, kind)
    if kind == "OSError-ENOSPC":  # a real write failure: refused before the swap, rolled back after it
        expected = hotfix.Reason.AUDIT_UNWRITABLE if point == "audit:verified" else hotfix.Reason.AUDIT_FAILED
        assert info.value.reason == expected
        assert str(audited) in (info.value.file or "") or info.value.audit_error or expected == hotfix.Reason.AUDIT_FAILED
    patch_id = getattr(info.value, "patch_id", None) or _last_patch_id(audited)
    assert not _assert_defined_state(mod, before, audited, patch_id, wrapper)


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_inside_a_check(modules, audited, kind):
    mod = modules.create(V1)
    wrapper = mod.cached
    before = snapshot(mod)
    modules.write(mod, V2)

    def check():
        raise FAULTS[kind]()

    with pytest.raises(BaseException) as info:  # checked below
        hotfix.apply(mod, probation=0.01, checks=[check])
    _expect_raised(info.value, kind)
    if kind not in ("KeyboardInterrupt", "SystemExit"):
        assert (info.value.reason, info.value.check) == (hotfix.Reason.CHECK_FAILED, check.__qualname__)
    patch_id = getattr(info.value, "patch_id", None) or _last_patch_id(audited)
    assert not _assert_defined_state(mod, before, audited, patch_id, wrapper)
    assert any(isinstance(h, hotfix.Rollback) and h.patch_id == patch_id for h in hotfix.history())


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_inside_the_migrate_hook(modules, audited, kind):
    mod = modules.create(V1)
    mod._FAULT = FAULTS[kind]()
    wrapper = mod.cached
    before = snapshot(mod)
    modules.write(mod, V2)
    with pytest.raises(BaseException) as info:  # checked below
        hotfix.apply(mod, probation=0.01)
    _expect_raised(info.value, kind)
    assert not hasattr(mod, "MIGRATED"), "the hook's own re-bind was undone"
    patch_id = getattr(info.value, "patch_id", None) or _last_patch_id(audited)
    assert not _assert_defined_state(mod, before, audited, patch_id, wrapper)


def _rollback_points():
    return [f"rollback:{s}" for s in _transaction.ROLLBACK_STEPS] + ["audit:rolling-back", "audit:rolled-back"]


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("point", _rollback_points())
def test_fault_at_each_rollback_step(modules, audited, point, kind):
    mod = modules.create(V1)
    wrapper = mod.cached
    before = snapshot(mod)
    modules.write(mod, V2)
    patch = hotfix.apply(mod, probation=0)
    fired = _inject(point, FAULTS[kind])
    try:
        hotfix.rollback(patch.id)
    except BaseException as exc:  # every kind is checked
        _expect_raised(exc, kind)
    finally:
        _events.fault_hook = _audit.fault_hook = None
    assert fired == [point]
    _assert_defined_state(mod, before, audited, patch.id, wrapper)
