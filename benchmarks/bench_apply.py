"""Apply a one-line fix: hotfix vs importlib.reload, IPython autoreload, jurigged, a restart.

For N = 50, 200, 1000 functions, each engine runs in its own fresh process
(``_driver.py``), in interleaved rounds (the engine order rotates every
round). Per child:

1. ``fix``: rewrite the file with a one-line fix and apply it; timed from
   "file rewritten" to "new behaviour visible" (hotfix: dry-run
   verification, pause, swap, verify, ``probation=0``). ``compile()`` of
   the same source in the same process is the floor.
2. ``fix2`` (N >= 200): the same under load: 8 busy worker threads
   (checkpoint, a tiny job calling the module, timestamp). The stall is the
   longest gap between two jobs of any worker that overlaps the patch; the
   reference is the longest gap in an equally long window without a patch.
   Only hotfix parks workers; for the others the gap is whatever the patch
   costs the workers anyway (the GIL).
3. ``shift``: a method gains one line, every later definition moves down.
4. Correctness after every patch (see the table), call cost after the patch
   (N = 200), probation overhead (hotfix, N = 200).

A restart is timed too: a fresh interpreter importing the fixed N = 1000
module (no ``.pyc``: the file just changed), interleaved with the others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import _common as c
import gen

SIZES = (50, 200, 1000)
STALL_SIZES = (200, 1000)
CALL_SIZE = 200
PROBATION_WINDOW = 0.6
SETTLE = 0.7  # seconds between import and the first patch, every engine (hotfix builds its running model then)


def child_config(engine: str, n: int, quick: bool, d: str, app: str) -> dict:
    # quick: jurigged's matching is O(N^2) (seconds per patch at N=1000, 10+ s for the line-shifting edit at
    # N=200), and the stall under 8 CPU-bound workers (seconds per child on a loaded box) runs at N=1000 only
    heavy = quick and engine == "jurigged" and n >= 1000
    shift = not (quick and engine == "jurigged" and n >= 200)
    stall = n in STALL_SIZES and not heavy and not (quick and n != max(STALL_SIZES))
    return {"mode": "engine", "engine": engine, "dir": d, "app": app, "holder": app + "_h", "n": n,
            "stall": stall, "shift": shift, "calls": n == CALL_SIZE,
            "probation": PROBATION_WINDOW if n == CALL_SIZE else 0, "settle": SETTLE, "later": True}


def restart_seconds(d: str, name: str) -> float:
    """A fresh interpreter that imports the fixed module (what a restart costs at least)."""
    code = f"import sys; sys.path.insert(0, {d!r}); import {name}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-B", "-c", code], check=True, timeout=120)
    return time.perf_counter() - t0


def collect(quick: bool) -> dict:
    engines, missing = c.available_engines()
    rounds = 3 if quick else 7
    runs: dict[str, dict[int, list[dict]]] = {e: {n: [] for n in SIZES} for e in engines}
    restarts: list[float] = []
    failures: list[str] = []
    with gen.Workspace() as ws:
        for r in range(rounds):
            for n in SIZES:
                jobs = engines + (["restart"] if n == 1000 else [])
                for e in c.rotate(jobs, r + SIZES.index(n)):
                    sub = os.path.join(ws.dir, f"r{r}-n{n}-{e}")
                    os.mkdir(sub)
                    try:
                        if e == "restart":
                            name = gen.unique_name("benchrestart")
                            gen.write_source(os.path.join(sub, name + ".py"), gen.render(n, "fix"))
                            restarts.append(restart_seconds(sub, name))
                            continue
                        app = gen.unique_name()
                        gen.write_source(os.path.join(sub, app + ".py"), gen.render(n))
                        gen.write_source(os.path.join(sub, app + "_h.py"), gen.render_holder(app))
                        runs[e][n].append(c.run_child(child_config(e, n, quick, sub, app), timeout=300))
                    except (c.ChildFailed, subprocess.SubprocessError) as exc:
                        failures.append(f"{e} N={n}: {str(exc)[:300]}")
                    finally:
                        shutil.rmtree(sub, ignore_errors=True)
    return {"engines": engines, "missing": missing, "rounds": rounds, "runs": runs,
            "restarts": restarts, "failures": failures}


def _phase(results: list[dict], phase: str, key: str = "seconds") -> dict:
    return c.summarize([r[phase][key] for r in results if phase in r and "error" not in r[phase]])


def build(raw: dict, quick: bool) -> dict:
    engines, runs = raw["engines"], raw["runs"]
    notes: list[str] = []
    data: dict = {"engines": engines, "rounds": raw["rounds"], "sizes": SIZES}

    apply_t = {e: {n: _phase(runs[e][n], "fix") for n in SIZES} for e in engines}
    compile_t = {n: c.summarize([r["compile_seconds"] for e in engines for r in runs[e][n]]) for n in SIZES}
    shift_t = {e: {n: _phase(runs[e][n], "shift") for n in SIZES} for e in engines}
    later_t = {e: {n: _phase(runs[e][n], "later") for n in SIZES} for e in engines}
    data.update(apply=apply_t, compile=compile_t, shift=shift_t, later=later_t)

    rows = [[e] + [c.fmt_summary_time(apply_t[e][n]) for n in SIZES] for e in engines]
    rows.append(["compile() floor"] + [c.fmt_summary_time(compile_t[n]) for n in SIZES])
    t_apply = c.md_table(["engine"] + [f"N={n}" for n in SIZES], rows)

    rel = {e: {n: c.ratio(apply_t[e][n], apply_t["hotfix"][n]) for n in SIZES} for e in engines if e != "hotfix"}
    floor = {n: c.ratio(apply_t["hotfix"][n], compile_t[n]) for n in SIZES} if "hotfix" in engines else {}
    rows = [[f"{e} / hotfix"] + [c.fmt_summary_x(rel[e][n]) for n in SIZES] for e in rel]
    if floor:
        rows.append(["hotfix / compile()"] + [c.fmt_summary_x(floor[n]) for n in SIZES])
    t_rel = c.md_table(["ratio (min / median)"] + [f"N={n}" for n in SIZES], rows)
    data.update(relative=rel, hotfix_over_compile=floor)

    rows = [[e] + [c.fmt_summary_time(later_t[e][n]) for n in SIZES] for e in engines]
    t_later = c.md_table(["engine"] + [f"N={n}" for n in SIZES], rows)

    rows = [[e] + [c.fmt_summary_time(shift_t[e][n]) for n in SIZES] for e in engines]
    t_shift = c.md_table(["engine"] + [f"N={n}" for n in SIZES], rows)

    # stall under load
    stall: dict = {}
    rows = []
    for n in STALL_SIZES:
        for e in engines:
            res = [r for r in runs[e][n] if "stall" in r and "error" not in r["stall"]]
            if not res:
                continue
            gap = c.summarize([r["stall"]["patch_gap"] for r in res])
            idle = c.summarize([r["stall"]["idle_gap"] for r in res])
            loaded = c.summarize([r["stall"]["seconds"] for r in res])
            held = c.summarize([r["stall"].get("stall_seconds") for r in res])
            failed = sum(r["stall"].get("failed_jobs", 0) for r in res)
            example = next((r["stall"]["failure_example"] for r in res if r["stall"].get("failure_example")), None)
            stall.setdefault(e, {})[n] = {"patch_gap": gap, "idle_gap": idle, "apply_under_load": loaded,
                                          "held": held, "gap_ratio": c.ratio(gap, idle),
                                          "failed_jobs": failed, "failure_example": example}
            rows.append([e, n, c.fmt_summary_time(gap), c.fmt_summary_time(idle),
                         c.fmt_summary_x(c.ratio(gap, idle)), c.fmt_summary_time(loaded),
                         c.fmt_summary_time(held) if held["n"] else "—",
                         f"{failed} ({example})" if failed else "0"])
    t_stall = c.md_table(["engine", "N", "longest worker gap during patch", "longest gap, no patch",
                          "patch / no patch", "apply time under load", "workers held (hotfix)",
                          "jobs that raised"], rows)
    data["stall"] = stall

    # correctness
    checks: dict[str, dict[str, bool | None]] = {}
    for e in engines:
        for r in (r for n in SIZES for r in runs[e][n]):
            for name, ok in r["checks"].items():
                if ok is not None:
                    prev = checks.setdefault(name, {}).get(e, True)
                    checks[name][e] = bool(prev and ok)
    rows = [[name] + [c.mark(checks[name].get(e)) for e in engines] for name in checks]
    visible = {e: all(r["fix"].get("visible") for n in SIZES for r in runs[e][n]) for e in engines}
    rows.insert(0, ["patch applied, new behaviour visible"] + [c.mark(visible[e]) for e in engines])
    t_checks = c.md_table(["after each patch"] + engines, rows)
    data.update(checks=checks, visible=visible)
    errors = sorted({f"{e}: {msg}" for e in engines for n in SIZES for r in runs[e][n] for msg in r["errors"]})
    if errors:
        notes.append("engine errors: " + "; ".join(errors[:6]))

    # restart
    restart = c.summarize(raw["restarts"])
    hot1k = apply_t["hotfix"][1000] if "hotfix" in engines else c.summarize([])
    restart_ratio = c.ratio(restart, hot1k)
    rows = [["restart (fresh interpreter imports the fixed app, N=1000)", c.fmt_summary_time(restart)],
            ["hotfix apply (N=1000)", c.fmt_summary_time(hot1k)],
            ["restart / hotfix apply", c.fmt_summary_x(restart_ratio)]]
    rows += [[f"restart / {e}", c.fmt_summary_x(c.ratio(restart, apply_t[e][1000]))] for e in engines if e != "hotfix"]
    t_restart = c.md_table(["", "min / median"], rows)
    data.update(restart=restart, restart_over_apply=restart_ratio)

    # call cost
    calls: dict = {}
    rows = []
    for e in engines:
        res = [r for r in runs[e][CALL_SIZE] if "calls" in r]
        if not res:
            continue
        fn = c.summarize([r["calls"]["function"]["ratio"] for r in res])
        meth_ok = checks.get("old instance's method sees fix", {}).get(e)
        meth = c.summarize([r["calls"]["method"]["ratio"] for r in res]) if meth_ok else c.summarize([])
        calls[e] = {"function": fn, "method": meth,
                    "per_call_ns": 1e9 * min(r["calls"]["function"]["patched"] for r in res)}
        rows.append([e, c.fmt_summary_x(fn, 3), c.fmt_summary_x(meth, 3) if meth_ok else "n/a (old code)",
                     c.mark(fn["median"] is not None and abs(fn["median"] - 1) <= 0.03)])
    t_calls = c.md_table(["engine", "patched function / fresh", "old instance's method / fresh", "within 1.00 ± 0.03?"], rows)
    data["calls"] = calls

    prob = [r["probation"] for r in runs.get("hotfix", {}).get(CALL_SIZE, []) if "probation" in r]
    t_prob = None
    if prob:
        pc_ = c.summarize([p["call_ratio"] for p in prob])
        pr_ = c.summarize([p["raise_ratio"] for p in prob])
        data["probation"] = {"call": pc_, "raise": pr_, "mechanism": prob[0]["mechanism"],
                             "inside_window": all(p["measured_inside_window"] for p in prob)}
        t_prob = c.md_table(["hotfix, N=200, during probation / after", "min / median"],
                            [["plain call of a patched function", c.fmt_summary_x(pc_, 3)],
                             ["call that raises ValueError (expected_exceptions) and is caught", c.fmt_summary_x(pr_, 3)],
                             ["watch mechanism", prob[0]["mechanism"]]])

    # summary
    summary = []
    if "hotfix" in engines:
        h = "hotfix"
        if "reload" in engines:
            first = c.ratio(apply_t[h][1000], apply_t["reload"][1000])
            summary.append(c.summary_row(
                f"apply one-line fix, first after import, N=1000: hotfix / importlib.reload "
                f"({c.fmt_summary_time(apply_t[h][1000])} vs {c.fmt_summary_time(apply_t['reload'][1000])})",
                c.fmt_summary_x(first), "≤ 1x", first["median"] is not None and first["median"] <= 1))
            later = c.ratio(later_t[h][1000], later_t["reload"][1000])
            summary.append(c.summary_row(
                f"apply one-line fix, later, N=1000: hotfix / importlib.reload "
                f"({c.fmt_summary_time(later_t[h][1000])} vs {c.fmt_summary_time(later_t['reload'][1000])})",
                c.fmt_summary_x(later), "≤ 1x (keep)", later["median"] is not None and later["median"] <= 1))
        summary.append(c.summary_row("apply one-line fix, N=1000: hotfix / compile() floor",
                                     c.fmt_summary_x(floor[1000]), "—", None))
        summary.append(c.summary_row("restart / hotfix apply (N=1000)", c.fmt_summary_x(restart_ratio), "—", None))
        if 1000 in stall.get(h, {}):
            s = stall[h][1000]
            summary.append(c.summary_row("worker stall N=1000, hotfix: longest gap during patch / no patch",
                                         c.fmt_summary_x(s["gap_ratio"]), "—", None))
            summary.append(c.summary_row("workers held by the pause (hotfix, N=1000)",
                                         c.fmt_summary_time(s["held"]), "—", None))
        passed = sum(1 for name in checks if checks[name].get(h)) + int(visible[h])
        total = len(checks) + 1
        summary.append(c.summary_row("hotfix correctness checks", f"{passed}/{total}", "all ✓", passed == total))
        if h in calls:
            fn = calls[h]["function"]
            within = fn["median"] is not None and abs(fn["median"] - 1) <= 0.03
            limit = sys.version_info >= (3, 13)  # __code__ writes disable call specialization (README)
            row = c.summary_row(
                f"call cost after a patch, hotfix: patched / fresh (Python {sys.version_info[0]}.{sys.version_info[1]})",
                c.fmt_summary_x(fn, 3), "1.00 ± 0.03" + (", or the documented 3.13+ limit" if limit else ""), within)
            if limit and not within:
                row["met"] = f"{c.CROSS} (documented limit)"
            summary.append(row)
        if "probation" in data:
            summary.append(c.summary_row(f"call cost during probation / after ({data['probation']['mechanism']})",
                                         c.fmt_summary_x(data["probation"]["call"], 3), "—", None))

    data["child_wall_seconds"] = {e: sum(r["wall_seconds"] for n in SIZES for r in runs[e][n]) for e in engines}
    if raw["missing"]:
        notes.append(f"not installed, skipped: {', '.join(raw['missing'])} (pip install -r benchmarks/requirements.txt)")
    if quick:
        notes.append(f"quick: the worker stall at N={max(STALL_SIZES)} only"
                     + ("; jurigged at N=1000 is timed for the one-line fix only, and its line-shifting edit at N=50 only"
                        if "jurigged" in engines else "") + ".")
    notes.append(f"{raw['rounds']} rounds, engines interleaved (order rotates each round); each figure is min / median over rounds.")
    notes.append("each child first patches a small separate module once (warm-up), so one-time costs such as lazy imports are not in the figures.")
    notes.append(f"every engine's child waits {SETTLE} s after importing the app before the first patch (a patch comes long after "
                 "import in real life); hotfix also waits for its background build of the running model to finish (untimed).")
    notes.extend(f"child failed: {f}" for f in raw["failures"][:5])

    tables = [
        "**Apply time, one-line fix** (file rewritten → verified/reloaded → new behaviour visible; min / median)\n\n" + t_apply,
        "**Relative apply time** (>1: slower than hotfix)\n\n" + t_rel,
        "**Apply time, a later one-line fix** (the second patch of the app in the process, no workers)\n\n" + t_later,
        "**Line-shifting edit** (a method gains a line; every later definition moves down)\n\n" + t_shift,
        "**Worker stall**, 8 busy workers (only hotfix parks them; gaps also include GIL scheduling)\n\n" + t_stall,
        "**Correctness** (✓ only if it held after every patch, at every N, in every round)\n\n" + t_checks,
        "**Restart instead**\n\n" + t_restart,
        f"**Call cost after the patch** (N={CALL_SIZE}; per child the min of 61 interleaved loops of 10,000 calls; min / median over rounds)\n\n" + t_calls,
    ]
    if t_prob:
        tables.append("**Probation overhead**\n\n" + t_prob)
    return c.section("apply", "Apply: hotfix vs reload, IPython autoreload, jurigged, restart",
                     summary=summary, tables=tables, notes=notes, data=data)


def run(quick: bool) -> dict:
    return build(collect(quick), quick)


if __name__ == "__main__":
    raise SystemExit(c.main(run, __doc__.splitlines()[0]))
