"""Install scope: importing a large third-party package (Django) after ``install()`` vs without,
and application modules in scope vs without ``install()``.

    python benchmarks/bench_install_scope.py [--quick]

Each sample is a fresh interpreter that imports hotfix (so the standard
library modules hotfix needs are loaded in both arms); one arm then calls
``install()``. The arms alternate, so machine noise hits both alike. Time is
the wall time of the imports alone; memory is the ``tracemalloc`` size after
them, in a separate run (tracing slows imports). Ratios, never pass/fail.
"""

from __future__ import annotations

import json
import os
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
arm, trace, body, path = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
if path:
    sys.path.insert(0, path)
import hotfix  # both arms: the modules hotfix itself imports are loaded either way
if arm == "install":
    hotfix.install()
before = len(sys.modules)
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
exec(compile(body, "<imports>", "exec"), {})
elapsed = time.perf_counter() - t0
size = tracemalloc.get_traced_memory()[0] if trace else None
baselines = 0
if arm == "install":
    import hotfix._baseline as b
    baselines = len(b.baselines())
    text = sum(len(x.text.encode()) for x in b.baselines().values())
else:
    text = 0
print(json.dumps({"seconds": elapsed, "bytes": size, "modules": len(sys.modules) - before,
                  "baselines": baselines, "text": text}))
"""


def sample(arm: str, trace: bool, body: str, path: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, arm, "1" if trace else "0", body, path],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(body: str, rounds: int, path: str = "") -> dict:
    runs: dict[str, list[dict]] = {"plain": [], "install": []}
    mem: dict[str, list[dict]] = {"plain": [], "install": []}
    for i in range(rounds):
        for arm in c.rotate(["plain", "install"], i):
            runs[arm].append(sample(arm, False, body, path))
    for i in range(max(2, rounds // 3)):
        for arm in c.rotate(["plain", "install"], i):
            mem[arm].append(sample(arm, True, body, path))
    t = {arm: c.summarize([r["seconds"] for r in rs]) for arm, rs in runs.items()}
    m = {arm: c.summarize([r["bytes"] for r in rs]) for arm, rs in mem.items()}
    return {"time": t, "memory": m, "time_ratio": c.ratio(t["install"], t["plain"]),
            "memory_ratio": c.ratio(m["install"], m["plain"]), "modules": runs["plain"][0]["modules"],
            "baselines": runs["install"][0]["baselines"], "text": runs["install"][0]["text"]}


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
        body = app_modules(tmp, 60 if quick else 200)
        # warm the .pyc files of the plain arm (a deployed app has them)
        subprocess.run([sys.executable, "-c", body], cwd=tmp, env={**os.environ, "PYTHONPATH": tmp}, check=True)
        a = compare(body, rounds, tmp)
        data["app"] = a
        extra = (a["memory"]["install"]["median"] or 0) - (a["memory"]["plain"]["median"] or 0)
        summary.append(c.summary_row("import application modules (in scope) after install() vs without: time",
                                     c.fmt_summary_x(a["time_ratio"]), "≤ 1.3x", (a["time_ratio"]["median"] or 9) <= 1.3))
        summary.append(c.summary_row("baseline memory vs the source text it keeps",
                                     f"{c.fmt_bytes(extra)} for {c.fmt_bytes(a['text'])} of source",
                                     "≤ 1x the text", extra <= a["text"]))
        tables.append(c.md_table([f"{a['modules']} application modules", "without install()", "after install()", "ratio"], [
            ["import time (min / median)", c.fmt_summary_time(a["time"]["plain"]), c.fmt_summary_time(a["time"]["install"]),
             c.fmt_summary_x(a["time_ratio"])],
            ["traced memory (median)", c.fmt_bytes(a["memory"]["plain"]["median"]), c.fmt_bytes(a["memory"]["install"]["median"]),
             c.fmt_summary_x(a["memory_ratio"])],
            ["source text kept", "-", c.fmt_bytes(a["text"]), ""],
        ]))
    notes.append("application modules after install() compile from source (no .pyc; no code cache in this run), "
                 "the plain arm loads warm .pyc files")
    return c.section("install_scope", "Install scope: third-party imports after install(), application modules in scope",
                     summary=summary, tables=tables, notes=notes, data=data)


if __name__ == "__main__":
    sys.exit(c.main(run, __doc__.splitlines()[0]))
