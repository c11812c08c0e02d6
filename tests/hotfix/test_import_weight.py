"""``import hotfix; hotfix.install()`` imports only what install uses (pinned, in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

#: Heavy modules no service should pay for until it uses the feature that needs them.
FORBIDDEN = ("watchdog", "asyncio", "ssl", "subprocess", "http", "socket", "socketserver", "selectors",
             "email", "urllib", "concurrent", "importlib.metadata", "opentelemetry", "prometheus_client",
             "safepoints", "bytecode", "json", "hotfix.admin", "hotfix._transaction", "hotfix._watch")

#: Exactly the hotfix modules that install needs.
HOTFIX_MODULES = {"hotfix", "hotfix._baseline", "hotfix._interpreter", "hotfix._scope", "hotfix._version"}

#: The top-level packages (besides hotfix and verification) that may come in, on 3.11-3.13: attrs and
#: the standard library modules that verification and attrs use. A new one must be added here knowingly.
ALLOWED_TOP_LEVEL = {
    "ast", "atexit", "attr", "attrs", "collections", "contextlib", "copy", "copyreg", "dataclasses", "difflib",
    "dis", "enum", "fnmatch", "functools", "gc", "hashlib", "heapq", "importlib", "inspect", "keyword",
    "linecache", "logging", "operator", "opcode", "pathlib", "platform", "re", "reprlib", "string", "textwrap",
    "sysconfig", "threading", "token", "tokenize", "traceback", "types", "typing", "unicodedata", "warnings",
    "weakref",
}


def _modules(code: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_import_and_install_bring_in_only_what_install_uses():
    # json is imported by both runs to print the list; the baseline imports it the same way
    baseline = _modules("")
    added = _modules("import hotfix; hotfix.install()") - baseline
    ours = {m for m in added if m.split(".")[0] == "hotfix"}
    assert ours == HOTFIX_MODULES
    for name in FORBIDDEN:
        if name == "json":
            continue
        assert not [m for m in added if m == name or m.startswith(name + ".")], (name, sorted(added))
    top = {m.split(".")[0] for m in added if not m.startswith("_")} - {"hotfix", "verification"}
    assert top <= ALLOWED_TOP_LEVEL, sorted(top - ALLOWED_TOP_LEVEL)


def test_everything_else_loads_on_first_use():
    code = ("import sys, hotfix; hotfix.install(); before = 'hotfix._transaction' in sys.modules; "
            "hotfix.apply; hotfix.watch; print(before, 'hotfix._transaction' in sys.modules, "
            "'hotfix._watch' in sys.modules, 'watchdog.events' in sys.modules, sorted(hotfix.__all__) == sorted("
            "n for n in dir(hotfix) if not n.startswith('_') and n not in ('admin',)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "True", "True"], proc.stdout + proc.stderr


def test_install_before_the_first_sysconfig_use():
    """The finder must not ask sysconfig while sysconfig imports its data module (3.13 raised)."""
    code = "import hotfix; hotfix.install(); import sysconfig; print(sorted(sysconfig.get_paths()) != [])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stdout + proc.stderr
