"""Import weight: ``import hotfix; hotfix.install()`` vs ``import logging, hashlib, json``.

Each measurement is a fresh interpreter (``python -c``) that times its own
imports with ``perf_counter`` and counts the modules they added; the
variants alternate, in rotating order, for several rounds (the first round
of each is a warm-up that also writes ``__pycache__``). Also the wall time
of the whole process (interpreter start-up included) against an empty
``python -c pass``.

The second table: importing a large third-party package (``fastapi``, when
installed) after ``hotfix.install()`` vs without, with and without the
content-addressed code cache (SPEC §8: no overhead outside the
application's scope).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import _common as c

ROOT = os.path.dirname(c.HERE)

_TIMED = """
import sys, time
t0 = time.perf_counter(); n0 = len(sys.modules)
{body}
t1 = time.perf_counter()
print({{"seconds": t1 - t0, "modules": len(sys.modules) - n0}})
"""

VARIANTS = {
    "hotfix": "import hotfix\nhotfix.install()",
    "stdlib": "import logging, hashlib, json",
}
LARGE = "fastapi"


def _large_variants(cache_dir: str) -> dict[str, str]:
    return {
        f"{LARGE} alone": f"import {LARGE}",
        f"{LARGE} after install()": f"import hotfix\nhotfix.install()\nt0 = time.perf_counter(); n0 = len(sys.modules)\nimport {LARGE}",
        f"{LARGE} after install(code_cache)": (f"import hotfix\nhotfix.install(code_cache={cache_dir!r})\n"
                                               f"t0 = time.perf_counter(); n0 = len(sys.modules)\nimport {LARGE}"),
    }


def run_variant(body: str) -> dict:
    code = _TIMED.format(body=body)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=os.environ | {"PYTHONDONTWRITEBYTECODE": ""})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise c.ChildFailed(proc.stderr[-1500:])
    out = json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))
    out["wall"] = wall
    return out


def collect(quick: bool, rounds: int | None = None, large: bool = True) -> dict:
    rounds = rounds or (8 if quick else 20)
    variants = dict(VARIANTS) | {"empty": "pass"}
    cache_dir = tempfile.mkdtemp(prefix="hotfix-bench-cache-")
    os.chmod(cache_dir, 0o700)
    have_large = large and subprocess.run([sys.executable, "-c", f"import {LARGE}"], capture_output=True).returncode == 0
    if have_large:
        variants |= _large_variants(cache_dir)
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    try:
        for r in range(rounds + 1):
            for name in c.rotate(list(variants), r):
                res = run_variant(variants[name])
                if r:  # round 0 warms the page cache and __pycache__ (and the code cache)
                    runs[name].append(res)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return {"rounds": rounds, "runs": runs, "large": have_large}


def build(raw: dict) -> dict:
    runs = raw["runs"]
    t = {k: c.summarize([r["seconds"] for r in v]) for k, v in runs.items()}
    wall = {k: c.summarize([r["wall"] for r in v]) for k, v in runs.items()}
    mods = {k: max((r["modules"] for r in v), default=0) for k, v in runs.items()}
    ratio = c.ratio(t["hotfix"], t["stdlib"])
    rows = [["`import hotfix; hotfix.install()`", c.fmt_summary_time(t["hotfix"]), mods["hotfix"], c.fmt_summary_time(wall["hotfix"])],
            ["`import logging, hashlib, json`", c.fmt_summary_time(t["stdlib"]), mods["stdlib"], c.fmt_summary_time(wall["stdlib"])],
            ["`pass` (interpreter start-up)", "—", "—", c.fmt_summary_time(wall["empty"])],
            ["hotfix / stdlib trio", c.fmt_summary_x(ratio), f"{mods['hotfix'] / max(mods['stdlib'], 1):.1f}x",
             c.fmt_summary_x(c.ratio(wall["hotfix"], wall["stdlib"]))]]
    table = c.md_table(["imports (fresh interpreter)", "import time (min / median)", "modules added",
                        "process wall time"], rows)
    summary = [c.summary_row(f"`import hotfix; hotfix.install()` / `import logging, hashlib, json` "
                             f"({mods['hotfix']} vs {mods['stdlib']} modules)",
                             c.fmt_summary_x(ratio), "≤ 2x", ratio["median"] is not None and ratio["median"] <= 2)]
    tables = ["**Import weight**\n\n" + table]
    data = {"import_seconds": t, "wall": wall, "modules": mods, "ratio": ratio}
    if raw["large"]:
        alone = t[f"{LARGE} alone"]
        rows = []
        for k in (f"{LARGE} after install()", f"{LARGE} after install(code_cache)"):
            rows.append([f"`import {LARGE}` {k.split(' ', 1)[1]}", c.fmt_summary_time(t[k]), c.fmt_summary_x(c.ratio(t[k], alone))])
        rows.insert(0, [f"`import {LARGE}` alone", c.fmt_summary_time(alone), "1x"])
        tables.append(f"**A large third-party package** (`{LARGE}`, {mods[f'{LARGE} alone']} modules) after "
                      "`hotfix.install()` vs without\n\n" + c.md_table(["", "import time (min / median)", "/ alone"], rows))
        plain = c.ratio(t[f"{LARGE} after install()"], alone)
        data["large"] = {"alone": alone, "after_install": plain,
                         "after_install_cached": c.ratio(t[f"{LARGE} after install(code_cache)"], alone)}
        summary.append(c.summary_row(f"`import {LARGE}` after `hotfix.install()` / without", c.fmt_summary_x(plain),
                                     "≈ 1x (SPEC §8)", plain["median"] is not None and plain["median"] <= 1.1))
    notes = [f"{raw['rounds']} rounds after a warm-up round, variants alternating in rotating order; "
             "import time measured inside each process (perf_counter around the imports)."]
    return c.section("import", "Import weight", summary=summary, tables=tables, notes=notes, data=data)


def run(quick: bool) -> dict:
    return build(collect(quick))


if __name__ == "__main__":
    raise SystemExit(c.main(run, __doc__.splitlines()[0]))
