"""Dry-run cost: vs compile() of the same source, and with ~2,000 modules loaded.

1. In this process: a 1,000-function module with a one-function change on
   disk. ``hotfix.dry_run`` (read, hash, parse and compile both versions,
   compare, runtime impact) vs ``compile()`` of the same file (read +
   compile), interleaved. Target ≤ 1.5x.
2. In child processes (``_driver.py`` mode ``modules``): ``dry_run`` and
   ``apply`` + ``rollback`` of a change that re-binds a module-level
   constant (hotfix then walks ``sys.modules`` for modules holding the old
   value) with the few modules a process starts with, then after importing
   2,000 more.

``python bench_dryrun.py --profile`` prints a cProfile of one dry run.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import os
import pstats
import shutil
import subprocess
import sys
import time

import _common as c
import gen

N = 1000
TARGET = 1.5
EXTRA_MODULES = 2000
WALK_N = 200

pc = time.perf_counter


def _compile_file(path: str) -> None:
    with open(path, "rb") as fh:
        compile(fh.read(), path, "exec", dont_inherit=True)


def dry_run_vs_compile(reps: int, profile: bool = False) -> dict:
    """Two cases, each interleaved with compile() of the same file.

    ``first``: the first dry run after import (the running version's model is
    built too). ``later``: the running version's model is already built (by an
    earlier dry run or apply); each repetition is a new version of the fix,
    since dry runs memoise by content.
    """
    import hotfix

    hotfix.install()
    names: list[str] = []
    with gen.Workspace() as ws:
        sys.path.insert(0, ws.dir)
        try:
            def fresh_module() -> tuple[str, str]:
                name = gen.unique_name("benchdry")
                names.append(name)
                path = ws.write(name, gen.render(N))
                importlib.import_module(name)
                return name, path

            name, path = fresh_module()
            ws.write(name, gen.render(N, "fix", k=2))
            report = hotfix.dry_run(name)  # warm-up; builds the running version's model
            _compile_file(path)
            if profile:
                out = io.StringIO()
                for label, target in (("first dry run after import", fresh_module()[0]), ("later dry run", name)):
                    gen.write_source(ws.path(target), gen.render(N, "fix", k=3))
                    prof = cProfile.Profile()
                    prof.enable()
                    hotfix.dry_run(target)
                    prof.disable()
                    out.write(f"==== {label}\n")
                    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
                return {"profile": out.getvalue()}
            res: dict[str, list[float]] = {"first": [], "later": [], "compile": []}
            for r in range(reps):
                first_name, first_path = fresh_module()
                ws.write(first_name, gen.render(N, "fix", k=2))
                ws.write(name, gen.render(N, "fix", k=3 + r))
                order = ("first", "later", "compile") if r % 2 == 0 else ("compile", "later", "first")
                for which in order:
                    t0 = pc()
                    if which == "first":
                        hotfix.dry_run(first_name)
                    elif which == "later":
                        hotfix.dry_run(name)
                    else:
                        _compile_file(path)
                    res[which].append(pc() - t0)
                sys.modules.pop(first_name, None)
            return {"verdict": report.verdict, "findings": [f.code for f in report.findings], **res}
        finally:
            sys.path.remove(ws.dir)
            for n in names:
                sys.modules.pop(n, None)


def modules_walk(rounds: int, reps: int) -> dict:
    runs, failures = [], []
    with gen.Workspace() as ws:
        prefix = f"benchtiny_{os.getpid()}_"
        for i in range(EXTRA_MODULES):
            gen.write_source(os.path.join(ws.dir, f"{prefix}{i:04d}.py"), gen.render_tiny(i))
        for _ in range(rounds):
            app = gen.unique_name("benchwalk")
            path = ws.write(app, gen.render(WALK_N))
            cfg = {"mode": "modules", "dir": ws.dir, "app": app, "n": WALK_N, "reps": reps,
                   "extra_modules": EXTRA_MODULES, "tiny_prefix": prefix}
            try:
                runs.append(c.run_child(cfg, timeout=300))
            except (c.ChildFailed, subprocess.SubprocessError) as exc:
                failures.append(str(exc)[:300])
            finally:
                os.remove(path)
                shutil.rmtree(os.path.join(ws.dir, "__pycache__"), ignore_errors=True)
    return {"runs": runs, "failures": failures}


def run(quick: bool) -> dict:
    d = dry_run_vs_compile(7 if quick else 21)
    comp = c.summarize(d["compile"])
    first, later = c.summarize(d["first"]), c.summarize(d["later"])
    r_first, r_later = c.ratio(first, comp), c.ratio(later, comp)
    t1 = c.md_table(["", "min / median", "/ compile()"], [
        [f"hotfix.dry_run, first after import (one-function change, {N:,} functions; {d['verdict']})",
         c.fmt_summary_time(first), c.fmt_summary_x(r_first)],
        ["hotfix.dry_run, running version's model already built (new content each time)",
         c.fmt_summary_time(later), c.fmt_summary_x(r_later)],
        ["compile() of the same file (read + compile)", c.fmt_summary_time(comp), "1x"],
    ])
    w = modules_walk(2 if quick else 5, 3 if quick else 5)
    rows, data_w = [], {}
    for label in ("dry_run", "apply"):
        few = c.summarize([min(r["few"][label]) for r in w["runs"]])
        many = c.summarize([min(r["many"][label]) for r in w["runs"]])
        data_w[label] = {"few": few, "many": many, "ratio": c.ratio(many, few)}
        rows.append([label.replace("_", "-") if label == "dry_run" else "apply (re-bound constant: dependents walk)",
                     c.fmt_summary_time(few), c.fmt_summary_time(many), c.fmt_summary_x(data_w[label]["ratio"])])
    counts = (w["runs"][0]["few"]["modules"], w["runs"][0]["many"]["modules"]) if w["runs"] else ("?", "?")
    t2 = c.md_table(["hotfix, N=200 module", f"{counts[0]} modules loaded", f"{counts[1]} modules loaded", "ratio"], rows)
    def met(r: dict) -> bool | None:
        return None if r["median"] is None else r["median"] <= TARGET

    summary = [
        c.summary_row(f"dry-run / compile(), one-function change, N={N:,}, first after import",
                      c.fmt_summary_x(r_first), f"≤ {TARGET}x", met(r_first)),
        c.summary_row(f"dry-run / compile(), one-function change, N={N:,}, running model built",
                      c.fmt_summary_x(r_later), f"≤ {TARGET}x", met(r_later)),
    ]
    if w["runs"]:
        summary.append(c.summary_row(f"dry-run with {counts[1]} vs {counts[0]} modules loaded",
                                     c.fmt_summary_x(data_w["dry_run"]["ratio"]), "—", None))
        summary.append(c.summary_row(f"apply (dependents walk) with {counts[1]} vs {counts[0]} modules loaded",
                                     c.fmt_summary_x(data_w["apply"]["ratio"]), "—", None))
    notes = [f"dry-run/compile: {len(d['compile'])} interleaved repetitions in one process; walk: "
             f"{len(w['runs'])} child processes, best of {3 if quick else 5} per child and phase."]
    notes.extend(f"child failed: {f}" for f in w["failures"][:3])
    return c.section("dryrun", "Dry run: vs compile(), and with ~2,000 modules loaded", summary=summary,
                     tables=[t1, t2], notes=notes, data={"vs_compile": {"first": first, "later": later, "compile": comp,
                                                                        "ratio_first": r_first, "ratio_later": r_later,
                                                                        "findings": d["findings"]},
                                                         "walk": data_w})


if __name__ == "__main__":
    if "--profile" in sys.argv[1:]:
        print(dry_run_vs_compile(0, profile=True)["profile"])
        raise SystemExit(0)
    raise SystemExit(c.main(run, __doc__.splitlines()[0]))
