"""Install scope: importing a large third-party package (Django) after ``install()`` vs without,
and application modules in scope vs without ``install()``.

    python benchmarks/bench_install_scope.py [--quick]

Each sample is a fresh interpreter that imports hotfix (so the standard
library modules hotfix needs are loaded in every arm); one arm then calls
``install()`` (its default code cache beside the source, warm), for the
application modules a third calls ``install(code_cache=False)`` (every
import compiles). The arms alternate, so machine
noise hits them alike. Time is the wall time of the imports alone; memory is
the ``tracemalloc`` size after them, in a separate run (tracing slows
imports). The plain arm loads warm ``.pyc`` files, as a deployed service does
(``PYTHONDONTWRITEBYTECODE`` is cleared for the warm-up and the children).
Ratios, never pass/fail.

"Baseline memory" is everything ``install()`` adds to the traced memory of
the imports (source kept, code indexes, records, the import hook's state)
against the size of the source text it keeps (the files' bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import _common as c

#: A large slice of Django (ORM, forms, templates, admin, test tools): ~600 modules.
DJANGO = """
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.admin"],
                   DATABASES={}, USE_TZ=True)
django.setup()
import django.contrib.admin, django.db.models, django.forms, django.template.loader, django.test
import django.views.generic, django.core.management, django.contrib.auth.models
"""

CHILD = """
import json, sys, time, tracemalloc
arm, trace, body, path, cache = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5]
if path:
    sys.path.insert(0, path)
import hotfix  # every arm: the modules hotfix itself imports are loaded either way
if arm == "install":
    hotfix.install()
elif arm == "nocache":
    hotfix.install(code_cache=False)
before = len(sys.modules)
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
exec(compile(body, "<imports>", "exec"), {})
elapsed = time.perf_counter() - t0
size = tracemalloc.get_traced_memory()[0] if trace else None
baselines = text = kept = 0
if arm != "plain":
    import hotfix._baseline as b
    baselines = len(b.baselines())
    text = sum(x.size for x in b.baselines().values())
    kept = sum(x.kept_bytes for x in b.baselines().values())
print(json.dumps({"seconds": elapsed, "bytes": size, "modules": len(sys.modules) - before,
                  "baselines": baselines, "text": text, "kept": kept}))
"""

#: .pyc files are written and read as in a deployed service, whatever the caller's environment says.
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}


def sample(arm: str, trace: bool, body: str, path: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, arm, "1" if trace else "0", body, path, ""],
                         capture_output=True, text=True, timeout=300, check=True, env=ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(body: str, rounds: int, path: str = "", app: bool = False) -> dict:
    arms = ["plain", "install", *(["nocache"] if app else [])]
    sample("install", False, body, path)  # fills the default code cache (a restarted service has it)
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    mem: dict[str, list[dict]] = {arm: [] for arm in arms}
    for i in range(rounds):
        for arm in c.rotate(arms, i):
            runs[arm].append(sample(arm, False, body, path))
    for i in range(max(2, rounds // 3)):
        for arm in c.rotate(arms, i):
            mem[arm].append(sample(arm, True, body, path))
    t = {arm: c.summarize([r["seconds"] for r in rs]) for arm, rs in runs.items()}
    m = {arm: c.summarize([r["bytes"] for r in rs]) for arm, rs in mem.items()}
    out = {"time": t, "memory": m, "time_ratio": c.ratio(t["install"], t["plain"]),
           "memory_ratio": c.ratio(m["install"], m["plain"]), "modules": runs["plain"][0]["modules"],
           "baselines": runs["install"][0]["baselines"], "text": runs["install"][0]["text"],
           "kept": runs["install"][0]["kept"]}
    if app:
        out["nocache_time_ratio"] = c.ratio(t["nocache"], t["plain"])
        out["nocache_memory_ratio"] = c.ratio(m["nocache"], m["plain"])
    return out


def app_modules(directory: str, count: int = 200) -> str:
    """``count`` application modules of ~60 functions each; returns the import statements."""
    for i in range(count):
        funcs = "\n".join(textwrap.dedent(f"""
            def f{j}(x, y=1):
                total = 0
                for k in range(x):
                    total += k * y + {j}
                return total
            """) for j in range(60))
        with open(os.path.join(directory, f"appmod_{i}.py"), "w", encoding="utf-8") as fh:
            fh.write(f'"""Application module {i}."""\n{funcs}\n')
    return "\n".join(f"import appmod_{i}" for i in range(count))


#: Pure-Python standard library modules that are single files on 3.11-3.13: real code, copied as the app.
REAL = ("argparse", "calendar", "configparser", "difflib", "fractions", "ftplib", "imaplib", "ipaddress", "optparse",
        "pickletools", "pydoc", "smtplib", "statistics", "tarfile", "_pydecimal")


def copied_modules(directory: str) -> str:
    """The ``REAL`` modules copied as ``app<name>.py``; returns the import statements."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    for name in REAL:
        shutil.copyfile(os.path.join(stdlib, name + ".py"), os.path.join(directory, f"app{name}.py"))
    return "\n".join(f"import app{name}" for name in REAL)


def run(quick: bool) -> dict:
    rounds = 5 if quick else 15
    summary, tables, notes = [], [], []
    data: dict = {}
    try:
        import django  # noqa: F401
    except ImportError:
        notes.append("django is not installed: the third-party arm is skipped (pip install django)")
    else:
        d = compare(DJANGO, rounds)
        data["django"] = d
        summary.append(c.summary_row("import Django after install() vs without: time (min/median)",
                                     c.fmt_summary_x(d["time_ratio"]), "≤ 1.05x", (d["time_ratio"]["median"] or 9) <= 1.05))
        summary.append(c.summary_row("import Django after install() vs without: memory (min/median)",
                                     c.fmt_summary_x(d["memory_ratio"]), "≤ 1.05x", (d["memory_ratio"]["median"] or 9) <= 1.05))
        tables.append(c.md_table(["Django (~{} modules)".format(d["modules"]), "without install()", "after install()", "ratio"], [
            ["import time (min / median)", c.fmt_summary_time(d["time"]["plain"]), c.fmt_summary_time(d["time"]["install"]),
             c.fmt_summary_x(d["time_ratio"])],
            ["traced memory (min / median)", f"{c.fmt_bytes(d['memory']['plain']['min'])} / {c.fmt_bytes(d['memory']['plain']['median'])}",
             f"{c.fmt_bytes(d['memory']['install']['min'])} / {c.fmt_bytes(d['memory']['install']['median'])}",
             c.fmt_summary_x(d["memory_ratio"])],
            ["baselines recorded", "-", str(d["baselines"]), ""],
        ]))
    with tempfile.TemporaryDirectory(prefix="hotfix-scope-") as tmp:
        for key, label, make in (("app", "generated application modules", lambda d: app_modules(d, 60 if quick else 200)),
                                 ("real", "real code: standard library modules copied as application modules",
                                  copied_modules)):
            app = os.path.join(tmp, key)
            os.makedirs(app)
            body = make(app)
            # warm the .pyc files of the plain arm (a deployed app has them)
            subprocess.run([sys.executable, "-c", body], cwd=app, env={**ENV, "PYTHONPATH": app}, check=True)
            a = compare(body, rounds, app, app=True)
            data[key] = a
            extra = (a["memory"]["install"]["median"] or 0) - (a["memory"]["plain"]["median"] or 0)
            a["baseline_memory"] = extra
            summary.append(c.summary_row(f"import {label} (in scope) after install() vs without: time",
                                         c.fmt_summary_x(a["time_ratio"]), "≤ 1.3x", (a["time_ratio"]["median"] or 9) <= 1.3))
            summary.append(c.summary_row("  the same with install(code_cache=False), every import compiles: time",
                                         c.fmt_summary_x(a["nocache_time_ratio"]), "(no target)", None))
            summary.append(c.summary_row("  baseline memory vs the source text it keeps (median)",
                                         f"{c.fmt_bytes(extra)} for {c.fmt_bytes(a['text'])} of source "
                                         f"({extra / max(a['text'], 1):.2f}x)",
                                         "≤ 1x the text", extra <= a["text"]))
            tables.append(c.md_table([f"{a['baselines']} {label}", "without install()", "after install()",
                                      "ratio", "install(code_cache=False)", "ratio"], [
                ["import time (min / median)", c.fmt_summary_time(a["time"]["plain"]),
                 c.fmt_summary_time(a["time"]["install"]), c.fmt_summary_x(a["time_ratio"]),
                 c.fmt_summary_time(a["time"]["nocache"]), c.fmt_summary_x(a["nocache_time_ratio"])],
                ["traced memory (median)", c.fmt_bytes(a["memory"]["plain"]["median"]),
                 c.fmt_bytes(a["memory"]["install"]["median"]), c.fmt_summary_x(a["memory_ratio"]),
                 c.fmt_bytes(a["memory"]["nocache"]["median"]), c.fmt_summary_x(a["nocache_memory_ratio"])],
                ["source text (file bytes) / kept compressed", "-", f"{c.fmt_bytes(a['text'])} / {c.fmt_bytes(a['kept'])}",
                 "", "", ""],
            ]))
    notes.append("after install() application modules never load a .pyc (it is trusted by mtime and size, which an "
                 "edit can keep): they load compiled code stored by content beside it (__pycache__/NAME.<tag>.hotfix, "
                 "warm here, as after a restart), or compile with install(code_cache=False). The plain arm loads warm "
                 ".pyc files. The generated modules are repetitive (their source compresses ~15x); the "
                 "copied standard library modules are real code (~3-4x). The kept source is zlib level 1")
    return c.section("install_scope", "Install scope: third-party imports after install(), application modules in scope",
                     summary=summary, tables=tables, notes=notes, data=data)


if __name__ == "__main__":
    sys.exit(c.main(run, __doc__.splitlines()[0]))
