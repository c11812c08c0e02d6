"""Apply time with 1,000,000 extra live (gc-tracked) objects vs without, per engine.

Each child (``_driver.py``, N = 200) optionally allocates 1M small
gc-tracked objects before importing the app, runs ``gc.collect()``, then
applies the one-line fix. Heap and no-heap children alternate, engines
rotate, several rounds. SPEC §4: finding what to swap must not cost a heap
scan, so hotfix's ratio should stay near 1 (target ≤ 1.05). For hotfix the
dry run (which may scan the heap for suspended generators and instance
counts, by design) is timed too.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import _common as c
import gen

N = 200
HEAP = 1_000_000
TARGET = 1.05


def collect(quick: bool) -> dict:
    engines, missing = c.available_engines()
    rounds = 4 if quick else 8
    runs: dict[str, dict[int, list[dict]]] = {e: {0: [], HEAP: []} for e in engines}
    failures: list[str] = []
    with gen.Workspace() as ws:
        for r in range(rounds):
            for e in c.rotate(engines, r):
                for heap in ((0, HEAP) if r % 2 == 0 else (HEAP, 0)):
                    sub = os.path.join(ws.dir, f"r{r}-{e}-{heap}")
                    os.mkdir(sub)
                    app = gen.unique_name()
                    gen.write_source(os.path.join(sub, app + ".py"), gen.render(N))
                    gen.write_source(os.path.join(sub, app + "_h.py"), gen.render_holder(app))
                    cfg = {"mode": "engine", "engine": e, "dir": sub, "app": app, "holder": app + "_h", "n": N,
                           "heap": heap, "dry_runs": 3}
                    try:
                        runs[e][heap].append(c.run_child(cfg, timeout=300))
                    except (c.ChildFailed, subprocess.SubprocessError) as exc:
                        failures.append(f"{e} heap={heap}: {str(exc)[:300]}")
                    finally:
                        shutil.rmtree(sub, ignore_errors=True)
    return {"engines": engines, "missing": missing, "rounds": rounds, "runs": runs, "failures": failures}


def build(raw: dict) -> dict:
    engines, runs = raw["engines"], raw["runs"]
    data: dict = {}
    rows = []
    summary = []
    for e in engines:
        small = c.summarize([r["fix"]["seconds"] for r in runs[e][0] if "error" not in r["fix"]])
        big = c.summarize([r["fix"]["seconds"] for r in runs[e][HEAP] if "error" not in r["fix"]])
        rat = c.ratio(big, small)
        met = rat["median"] is not None and rat["median"] <= TARGET
        data[e] = {"no_extra_heap": small, "extra_heap": big, "ratio": rat}
        rows.append([e, c.fmt_summary_time(small), c.fmt_summary_time(big), c.fmt_summary_x(rat), c.mark(met)])
        if e == "hotfix":
            summary.append(c.summary_row("apply with +1M live objects / without (hotfix)", c.fmt_summary_x(rat),
                                         f"≤ {TARGET:.2f}x", met))
    # control: compile() of the same source in the same children (no heap walk at all)
    small = c.summarize([r["compile_seconds"] for e in engines for r in runs[e][0]])
    big = c.summarize([r["compile_seconds"] for e in engines for r in runs[e][HEAP]])
    control = c.ratio(big, small)
    data["compile_control"] = {"no_extra_heap": small, "extra_heap": big, "ratio": control}
    rows.append(["compile() (control: walks no heap)", c.fmt_summary_time(small), c.fmt_summary_time(big),
                 c.fmt_summary_x(control), "—"])
    for row in summary:
        row["value"] += f" (compile() control: {c.fmt_summary_x(control)})"
    table = c.md_table(["engine", "apply, no extra heap", f"apply, +{HEAP:,} objects", "ratio",
                        f"≤ {TARGET:.2f}x?"], rows)
    tables = [f"**Apply time vs heap size** (N={N}, one-line fix; min / median)\n\n" + table]
    if "hotfix" in engines:
        small = c.summarize([min(r["dry_run"]) for r in runs["hotfix"][0] if r.get("dry_run")])
        big = c.summarize([min(r["dry_run"]) for r in runs["hotfix"][HEAP] if r.get("dry_run")])
        rat = c.ratio(big, small)
        data["hotfix_dry_run"] = {"no_extra_heap": small, "extra_heap": big, "ratio": rat}
        tables.append(c.md_table(["hotfix.dry_run (pending one-line change)", "no extra heap", f"+{HEAP:,} objects", "ratio"],
                                 [["best of 3 per child", c.fmt_summary_time(small), c.fmt_summary_time(big),
                                   c.fmt_summary_x(rat)]]))
        summary.append(c.summary_row("dry-run with +1M live objects / without (hotfix)", c.fmt_summary_x(rat), "—", None))
    notes = [f"{raw['rounds']} rounds; heap and no-heap children alternate, engines rotate.",
             "the compile() row is the control: code that walks no heap at all also slows down a little "
             "in a process with a big heap (memory and cache effects); a ratio close to it is not heap scanning."]
    if raw["missing"]:
        notes.append(f"not installed, skipped: {', '.join(raw['missing'])}")
    notes.extend(f"child failed: {f}" for f in raw["failures"][:5])
    return c.section("heap", "Heap: apply with 1M extra live objects", summary=summary, tables=tables,
                     notes=notes, data=data)


def run(quick: bool) -> dict:
    return build(collect(quick))


if __name__ == "__main__":
    raise SystemExit(c.main(run, __doc__.splitlines()[0]))
