"""What a worker feels during a patch: the longest gap with short-period workers, per engine.

Workers that serve requests are mostly waiting: each one here loops every
0.5 ms (sleep inside ``safepoints.idle()``, one small job inside
``critical()``, a timestamp). A service feels a patch as the longest time
any worker could not get its next job done. Per child (one engine, one
N, one worker count, a fresh process):

- import the app (``gen.py``, N functions), start the workers, let them
  settle (1 s: also what hotfix does in the background after import);
- patch it ``patches`` times, a different one-line fix each time
  (hotfix: ``apply(probation=0)``, verification included; reload:
  ``importlib.reload``);
- per patch: the longest gap between two consecutive jobs of any worker
  that overlaps the patch, and the longest gap in a window of the same
  length right after it with no patch running (the idle reference).

Target (issue 16): the gap during a patch stays within the idle gap +
1 ms. Children for the engines, sizes and worker counts are interleaved
(the order rotates every round); each figure is min / median over all
patches after the first. The first patch after import is reported apart.

Two versions of hotfix side by side (a change and what it replaces):
``--trees before=../old-checkout,after=.`` runs the hotfix children once
per source tree (``PYTHONPATH``), interleaved with the rest, as engines
``hotfix@before`` and ``hotfix@after``. ``--sizes``, ``--workers``,
``--rounds`` and ``--patches`` narrow a run.
"""

from __future__ import annotations

import argparse
import os
import shutil

import _common as c
import gen

ENGINES = ("hotfix", "reload")
SIZES = (50, 200, 1000)
WORKERS = (8, 64)
PERIOD = 0.0005
BUDGET = 0.001  # the target: idle gap + 1 ms


def collect(quick: bool, sizes=SIZES, workers=WORKERS, rounds: int | None = None,
            patches: int | None = None, trees: dict[str, str] | None = None) -> dict:
    rounds = rounds or (3 if quick else 5)
    patches = patches or (4 if quick else 8)
    engines = ENGINES if not trees else tuple(f"hotfix@{t}" for t in trees) + ("reload",)
    jobs = [(e, n, w) for n in sizes for w in workers for e in engines]
    runs: dict[tuple[str, int, int], list[dict]] = {j: [] for j in jobs}
    failures: list[str] = []
    with gen.Workspace() as ws:
        for r in range(rounds):
            for e, n, w in c.rotate(jobs, r * 5):
                sub = os.path.join(ws.dir, f"r{r}-{e}-{n}-{w}")
                os.mkdir(sub)
                try:
                    app = gen.unique_name()
                    gen.write_source(os.path.join(sub, app + ".py"), gen.render(n))
                    engine, _, tree = e.partition("@")
                    cfg = {"mode": "latency", "engine": engine, "dir": sub, "app": app, "n": n, "workers": w,
                           "period": PERIOD, "patches": patches + 1, "settle": 1.0}
                    runs[(e, n, w)].append(c.run_child(cfg, timeout=300, pythonpath=(trees or {}).get(tree)))
                except c.ChildFailed as exc:
                    failures.append(f"{e} N={n} workers={w}: {str(exc)[:300]}")
                finally:
                    shutil.rmtree(sub, ignore_errors=True)
    return {"rounds": rounds, "patches": patches, "runs": runs, "failures": failures,
            "sizes": sizes, "workers": workers, "engines": engines, "trees": trees or {}}


def build(raw: dict) -> dict:
    rows, data, summary, notes = [], {}, [], []
    firsts = []
    for (e, n, w), res in raw["runs"].items():
        if not res:
            continue
        later = [p for r in res for p in r["patches"][1:]]
        first = [r["patches"][0] for r in res]
        gap = c.summarize([p["patch_gap"] for p in later])
        idle = c.summarize([p["idle_gap"] for p in later])
        excess = c.summarize([p["patch_gap"] - p["idle_gap"] for p in later])
        apply_t = c.summarize([p["seconds"] for p in later])
        held = c.summarize([p["held"] for p in later])
        first_gap = c.summarize([p["patch_gap"] for p in first])
        first_idle = c.summarize([p["idle_gap"] for p in first])
        failed = sum(r["failed_jobs"] for r in res)
        visible = all(p["visible"] for r in res for p in r["patches"])
        met = gap["median"] is not None and gap["median"] <= idle["median"] + BUDGET
        data[f"{e}/{n}/{w}"] = {"engine": e, "n": n, "workers": w, "patch_gap": gap, "idle_gap": idle,
                                "excess": excess, "apply": apply_t, "held": held, "first_gap": first_gap,
                                "first_idle_gap": first_idle, "failed_jobs": failed, "visible": visible, "met": met}
        rows.append([e, n, w, c.fmt_summary_time(gap), c.fmt_summary_time(idle), c.fmt_summary_time(excess),
                     c.mark(met), c.fmt_summary_time(apply_t),
                     c.fmt_summary_time(held) if held["n"] else "—", str(failed) + ("" if visible else " (patch not visible!)")])
        firsts.append([e, n, w, c.fmt_summary_time(first_gap), c.fmt_summary_time(first_idle),
                       c.fmt_summary_time(c.summarize([p["seconds"] for p in first]))])
    rows.sort(key=lambda r: (r[1], r[2], r[0]))
    firsts.sort(key=lambda r: (r[1], r[2], r[0]))
    table = c.md_table(["engine", "N", "workers", "longest gap during patch", "longest gap, no patch",
                        "excess (patch − no patch)", "≤ no patch + 1 ms?", "apply time (under load)",
                        "workers held (hotfix)", "jobs that raised"], rows)
    table_first = c.md_table(["engine", "N", "workers", "longest gap, first patch after import",
                              "longest gap, no patch", "first apply (under load)"], firsts)
    hotfixes = [e for e in raw.get("engines", ENGINES) if e.startswith("hotfix")]
    for n in raw["sizes"]:
        for w in raw["workers"]:
            rl = data.get(f"reload/{n}/{w}")
            for label in hotfixes:
                h = data.get(f"{label}/{n}/{w}")
                if h is None or n != max(raw["sizes"]) and w != min(raw["workers"]):
                    continue
                ref = f" (reload: {c.fmt_summary_time(rl['patch_gap'])})" if rl else ""
                summary.append(c.summary_row(
                    f"longest worker gap during a patch, {label}, N={n}, {w} workers (0.5 ms loops){ref}",
                    f"{c.fmt_summary_time(h['patch_gap'])} (no patch: {c.fmt_summary_time(h['idle_gap'])}; "
                    f"excess median {c.fmt_time(h['excess']['median'])})",
                    "≤ no patch + 1 ms", h["met"]))
    notes.append(f"{raw['rounds']} rounds × {raw['patches']} patches per child after a first one; children interleaved "
                 "(order rotates each round); min / median over all patches.")
    notes.append("the gap during a patch is taken over the patch only; the reference is a window of the same length "
                 "right after it (workers keep running), so both see the same scheduling noise. `met?`: median gap ≤ "
                 "median no-patch gap + 1 ms; the excess is per patch (gap − its own reference).")
    notes.extend(f"hotfix@{t}: source tree {path}" for t, path in raw.get("trees", {}).items())
    notes.extend(f"child failed: {f}" for f in raw["failures"][:5])
    tables = ["**Longest gap a worker sees** (workers loop every 0.5 ms; patches after the first)\n\n" + table,
              "**First patch after import** (hotfix's running model built in the background during the 1 s settle)\n\n"
              + table_first]
    return c.section("latency", "Latency: what a worker feels during a patch", summary=summary, tables=tables,
                     notes=notes, data=data)


def run(quick: bool) -> dict:
    return build(collect(quick))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--trees", help="label=path,... : hotfix from each source tree, side by side")
    parser.add_argument("--sizes", type=_ints, default=SIZES)
    parser.add_argument("--workers", type=_ints, default=WORKERS)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--patches", type=int)
    ours, rest = parser.parse_known_args(argv)
    trees = dict(item.split("=", 1) for item in ours.trees.split(",")) if ours.trees else None

    def narrowed(quick: bool) -> dict:
        return build(collect(quick, ours.sizes, ours.workers, ours.rounds, ours.patches, trees))

    return c.main(narrowed, __doc__.splitlines()[0], rest)


if __name__ == "__main__":
    raise SystemExit(main())
