"""The running version's model is built in the background after import, for application modules only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hotfix
from hotfix import _prebuild
from tests.helpers import REPO
from verification._model import peek_model


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(_prebuild, "QUIET", 0.0)
    monkeypatch.setattr(_prebuild, "MIN_SOURCE", 1000)


def test_small_modules_are_left_alone(modules, monkeypatch):
    monkeypatch.setattr(_prebuild, "QUIET", 0.0)
    mod = modules.create("def f():\n    return 1\n")
    assert _prebuild.wait_idle(60)
    assert mod.__name__ not in _prebuild.built()


def test_an_imported_module_gets_its_model_built(modules, quick):
    source = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300))
    mod = modules.create(source)
    assert _prebuild.wait_idle(60)
    assert mod.__name__ in _prebuild.built()
    baseline = hotfix._baseline.get_baseline(mod.__name__)
    model = peek_model(baseline.state.path, baseline.state.sha256)
    assert model is not None and model.code is baseline.code  # parsed only: the import's code object is kept
    modules.write(mod, source.replace("x + 7\n", "x + 70\n"))
    patch = hotfix.apply(mod, probation=0)
    assert patch.status == "applied" and mod.f7(1) == 71


def test_the_source_budget_bounds_what_is_built(modules, quick, monkeypatch):
    monkeypatch.setattr(_prebuild, "SOURCE_BUDGET", _prebuild._spent + 10)  # nothing more fits
    mod = modules.create("".join(f"def g{i}():\n    return {i}\n\n" for i in range(50)))
    assert _prebuild.wait_idle(60)
    assert mod.__name__ not in _prebuild.built()


def test_the_background_thread_restarts_in_a_forked_child(tmp_path):
    app = tmp_path / "prebuild_fork_app.py"
    app.write_text("".join(f"def f{i}():\n    return {i}\n\n" for i in range(50)))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import hotfix
        from hotfix import _prebuild
        _prebuild.QUIET = 60.0  # nothing is built in the parent before the fork
        _prebuild.MIN_SOURCE = 0
        hotfix.install()
        import prebuild_fork_app
        pid = os.fork()
        if pid == 0:
            _prebuild.QUIET = 0.0
            _prebuild.enqueue("prebuild_fork_app")
            ok = _prebuild.wait_idle(60) and _prebuild.built() == ["prebuild_fork_app"]
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), "parent built", _prebuild.built())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "child 0 parent built []" in proc.stdout, proc.stdout + proc.stderr
