"""``import hotfix; hotfix.install()`` imports only what install uses (pinned, in a fresh interpreter).

The yardstick is ``import logging, hashlib, json`` (SPEC: install() costs at
most twice that; benchmarks/bench_import.py measures the time): beyond what
those three import, install() may add only hotfix's own modules, the
baseline record of ``verification`` and ``zlib``. Not a timing test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

from hotfix import _scope
from tests.helpers import REPO

#: Heavy modules no service should pay for until it uses the feature that needs them.
FORBIDDEN = ("watchdog", "asyncio", "ssl", "subprocess", "http", "socket", "socketserver", "selectors",
             "email", "urllib", "concurrent", "importlib.metadata", "opentelemetry", "prometheus_client",
             "safepoints", "bytecode", "hotfix.admin", "hotfix._transaction", "hotfix._watch",
             "attr", "attrs", "typing", "inspect", "dis", "ast", "copy", "platform", "sysconfig", "unicodedata",
             "difflib", "dataclasses", "pathlib", "gc")

#: Exactly what install() adds to ``import logging, hashlib, json``.
INSTALL_ADDS = {"hotfix", "hotfix._baseline", "hotfix._interpreter", "hotfix._scope", "hotfix._version",
                "verification", "verification._running", "zlib"}
#: What the first import of an application module (its baseline recorded) may add on top of that.
FIRST_BASELINE_ADDS = {"hotfix._prebuild"}

TRIO = "import logging, hashlib, json"


def _modules(code: str, *, cwd: str = str(REPO)) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _forbidden(names: set[str]) -> list[str]:
    return sorted(m for m in names for f in FORBIDDEN if m == f or m.startswith(f + "."))


def test_import_and_install_add_only_hotfix_and_the_baseline_record_to_the_stdlib_trio():
    trio = _modules(TRIO)
    added = _modules(f"{TRIO}\nimport hotfix; hotfix.install()") - trio
    assert added <= INSTALL_ADDS, sorted(added - INSTALL_ADDS)
    assert {m for m in added if m.startswith("hotfix")} == {m for m in INSTALL_ADDS if m.startswith("hotfix")}
    alone = _modules("import hotfix; hotfix.install()") - _modules("")
    assert not _forbidden(alone - {"json", "json.decoder", "json.encoder", "json.scanner"}), _forbidden(alone)


def test_recording_a_baseline_imports_no_parser_and_no_attrs(tmp_path):
    (tmp_path / "weight_app.py").write_text("def f():\n    return 1\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n{TRIO}\nimport hotfix; hotfix.install()\n"
            "import weight_app, hotfix._baseline as b\nassert b.get_baseline('weight_app') is not None")
    added = _modules(code) - _modules(TRIO)
    allowed = INSTALL_ADDS | FIRST_BASELINE_ADDS | {"weight_app"}
    assert added <= allowed, sorted(added - allowed)


def test_everything_else_loads_on_first_use():
    code = ("import sys, hotfix; hotfix.install(); before = 'hotfix._transaction' in sys.modules; "
            "hotfix.apply; hotfix.watch; print(before, 'hotfix._transaction' in sys.modules, "
            "'hotfix._watch' in sys.modules, 'watchdog.events' in sys.modules, sorted(hotfix.__all__) == sorted("
            "n for n in dir(hotfix) if not n.startswith('_') and n not in ('admin',)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "True", "True"], proc.stdout + proc.stderr


def test_public_errors_and_value_objects_are_real_classes_after_lazy_loading():
    code = ("import hotfix, verification; hotfix.install()\n"
            "assert issubclass(hotfix.PatchRejected, hotfix.HotfixError) and issubclass(hotfix.HotfixError, Exception)\n"
            "assert issubclass(hotfix.UnsupportedInterpreter, RuntimeError)\n"
            "import attrs; assert attrs.has(hotfix.Patch) and attrs.has(verification.FileState)\n"
            "from hotfix._interpreter import Problem; assert attrs.has(Problem)\n"
            "from hotfix._scope import StaleModule; assert attrs.has(StaleModule)\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_the_installation_directories_cover_what_sysconfig_reports():
    """install() finds the standard library and site-packages without sysconfig: the same directories."""
    ours = set(_scope.system_directories())
    for scheme_vars in (None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars) if scheme_vars else sysconfig.get_paths()
        for key in ("stdlib", "purelib", "platlib"):
            if key in paths and os.path.isdir(paths[key]):
                assert _scope.real_path(paths[key]) in ours, (key, paths[key], sorted(ours))


def test_install_before_the_first_sysconfig_use():
    """The finder must not ask sysconfig while sysconfig imports its data module (3.13 raised)."""
    code = "import hotfix; hotfix.install(); import sysconfig; print(sorted(sysconfig.get_paths()) != [])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stdout + proc.stderr
