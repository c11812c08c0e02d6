"""``health`` (no token): booleans and counts. Crash output of a patched process names its patches."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import hotfix
import hotfix.admin
from hotfix import _metrics
from tests.helpers import REPO

TOKEN = "health-token-" + "h" * 24
V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"


def test_health_counts_probation_patches_and_stale_modules(modules):
    mod = modules.create(V1)
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    anonymous = hotfix.admin.Client(server.url)  # no token
    try:
        before = anonymous.health().body
        assert before["in_probation"] is False
        assert before["stale_modules"] == 0  # only this test's directory is in the server's scope
        modules.write(mod, V2)
        assert anonymous.health().body["stale_modules"] == 1
        seen = {}

        def check():  # runs after the swap, inside the transaction
            seen.update(anonymous.health().body)
            return True

        patch = hotfix.apply(mod, probation=0, checks=[check])
        assert seen["in_probation"] is True
        after = anonymous.health().body
        assert after["in_probation"] is False
        assert after["stale_modules"] == 0
        assert after["patches_in_effect"] == before["patches_in_effect"] + 1 == len(_metrics.patch_ids_in_effect())
        assert patch.id not in str(after) and mod.__name__ not in str(after)  # counts only, no names
        hotfix.rollback()
        assert anonymous.health().body["patches_in_effect"] == before["patches_in_effect"]
    finally:
        server.close()


CHILD = """
import faulthandler, os, pathlib, sys, threading
import hotfix
hotfix.install()
sys.path.insert(0, sys.argv[1])
import {name} as mod
pathlib.Path(sys.argv[1], "{name}.py").write_text("def f():\\n    return 2\\n")
{before}
patch = hotfix.apply(mod, probation=0)
print("PATCH", patch.id, flush=True)
{crash}
"""


def _run_child(tmp_path, before: str, crash: str) -> subprocess.CompletedProcess:
    name = f"taintmod_{tmp_path.name[-8:].replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("def f():\n    return 1\n")
    code = textwrap.dedent(CHILD).format(name=name, before=before, crash=crash)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def _patch_id(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PATCH ")]
    assert lines, proc.stdout + proc.stderr
    return lines[0].split()[1]


def test_unhandled_exceptions_name_the_patches_in_effect(tmp_path):
    proc = _run_child(tmp_path, "", textwrap.dedent("""
        t = threading.Thread(target=lambda: 1 / 0, name="doomed")
        t.start(); t.join()
        raise RuntimeError("main thread dies")
    """))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    patch_id = _patch_id(proc)
    err = proc.stderr
    taint = f"hotfix: TAINTED by live patches in effect: {patch_id} (taintmod_"
    # the thread's traceback, then the taint line; the main thread's traceback, then the taint line
    assert err.count(taint) == 2, err
    assert err.index("ZeroDivisionError") < err.index(taint) < err.index("RuntimeError: main thread dies")
    assert err.rstrip().splitlines()[-1].startswith(taint)


def test_no_taint_line_once_everything_was_rolled_back(tmp_path):
    proc = _run_child(tmp_path, "", "hotfix.rollback()\nraise RuntimeError('after rollback')")
    assert proc.returncode == 1
    assert "TAINTED" not in proc.stderr and "RuntimeError: after rollback" in proc.stderr


def test_faulthandler_stream_says_the_process_is_patched_before_a_fatal_dump(tmp_path):
    proc = _run_child(tmp_path, "faulthandler.enable()", "import ctypes\nctypes.string_at(0)")
    assert proc.returncode != 0
    patch_id = _patch_id(proc)
    err = proc.stderr
    assert "Fatal Python error" in err, err
    assert err.index(f"TAINTED by live patches in effect: {patch_id}") < err.index("Fatal Python error")
