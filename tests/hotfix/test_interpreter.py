"""install() checks that the interpreter behaves as hotfix assumes, and refuses clearly when not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hotfix
from hotfix import _interpreter


def test_this_interpreter_passes_every_probe():
    assert _interpreter.problems() == ()
    _interpreter.check()


def test_each_probe_leaves_no_trace_and_reports_nothing_here():
    for probe in _interpreter.PROBES:
        assert probe() is None, probe.__name__


def test_a_failed_assumption_refuses_install_and_names_it(monkeypatch):
    def broken():
        return _interpreter.Problem("function.__code__ is writable", "AttributeError('readonly attribute')")

    monkeypatch.setattr(_interpreter, "PROBES", (*_interpreter.PROBES, broken))
    with pytest.raises(hotfix.UnsupportedInterpreter) as info:
        _interpreter.check()
    assert [p.assumption for p in info.value.problems] == ["function.__code__ is writable"]
    assert "3.11-3.13" in str(info.value)


def test_install_refuses_before_putting_its_finder_in_place():
    # a fresh process where the __code__ probe fails: install() raises and leaves sys.meta_path alone
    code = textwrap.dedent("""
        import sys
        from hotfix import _interpreter
        import hotfix
        _interpreter.PROBES = (lambda: _interpreter.Problem("a call after a __code__ write runs the new code",
                                                            "returned 1, not 102"),)
        before = list(sys.meta_path)
        try:
            hotfix.install()
        except hotfix.UnsupportedInterpreter as exc:
            print("refused", [p.assumption for p in exc.problems], sys.meta_path == before, hotfix.installed())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused ['a call after a __code__ write runs the new code'] True False", out
