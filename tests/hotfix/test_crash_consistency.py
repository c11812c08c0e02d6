"""Crash consistency: a process SIGKILLed at every step leaves an audit file that parses, and a restart is clean.

The child blocks at one step (the fault hook waits forever there), the test
kills it with SIGKILL, then a fresh process with the same audit file and the
same source tree applies and rolls back as usual.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from hotfix import _transaction
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX SIGKILL")

V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"
V3 = "def f():\n    return 3\n"

CHILD = r"""
import importlib, sys, threading
sys.path[:0] = [{repo!r}, {mods!r}]
import hotfix
from hotfix import _audit, _events
hotfix.install()
mod = importlib.import_module({name!r})
hotfix.configure(audit_log={audit!r})
target = sys.argv[1]

def block(point):
    if point == target:
        print("AT", point, flush=True)
        threading.Event().wait()  # until SIGKILL

_events.fault_hook = _audit.fault_hook = block
with open(mod.__file__, "w") as fh:
    fh.write({v2!r})
patch = hotfix.apply(mod, probation=0.01, checks=[lambda: mod.f() == 2])
hotfix.rollback(patch.id)
print("NOT REACHED", target, flush=True)
"""

RESTART = r"""
import importlib, json, sys
sys.path[:0] = [{repo!r}, {mods!r}]
import hotfix
hotfix.install()
mod = importlib.import_module({name!r})
hotfix.configure(audit_log={audit!r})
before = mod.f()
unchanged = hotfix.apply(mod, probation=0)
with open(mod.__file__, "w") as fh:
    fh.write({v3!r})
patch = hotfix.apply(mod, probation=0)
after = mod.f()
hotfix.rollback(patch.id)
print(json.dumps({{"before": before, "unchanged": unchanged.status.value, "after": after, "back": mod.f()}}))
"""

AUDIT_WRITES = ("verified", "swapped", "applied", "rolling-back", "rolled-back")  # test_faults pins this list
POINTS = ([f"apply:{s}" for s in _transaction.APPLY_STEPS] + [f"rollback:{s}" for s in _transaction.ROLLBACK_STEPS]
          + [f"audit:{s}" for s in AUDIT_WRITES])


def _parse_whole_lines(path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_then_a_clean_restart(modules, tmp_path, point):
    mod = modules.create(V1)
    audit = tmp_path / "audit.jsonl"
    fields = {"repo": str(REPO), "mods": str(modules.dir), "name": mod.__name__, "audit": str(audit)}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(v2=V2, **fields), point],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # blocks until the child is parked at the step (or exits)
        assert line.strip() == f"AT {point}", line + child.stderr.read() if child.poll() is not None else line
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(60)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    records = _parse_whole_lines(audit)
    assert all(r["pid"] == child.pid for r in records)

    restart = subprocess.run([sys.executable, "-c", RESTART.format(v3=V3, **fields)], capture_output=True, text=True,
                             timeout=120)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    # the restarted process runs the disk version (V2, written before the kill), applies V3 and rolls back
    assert json.loads(restart.stdout.strip().splitlines()[-1]) == {"before": 2, "unchanged": "unchanged", "after": 3,
                                                                   "back": 2}
    after = _parse_whole_lines(audit)
    assert after[:len(records)] == records
    assert [r["step"] for r in after[len(records):]] == ["verified", "unchanged", "verified", "swapped", "applied",
                                                          "rolling-back", "rolled-back"]
