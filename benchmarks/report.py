"""One table of issue 16's figures across Python versions, from ``run_all.py`` JSON results.

    python benchmarks/report.py results-3.11.json results-3.12.json results-3.13.json

Each column is one run (one Python version); each cell is min / median as
measured in that run. The ``met?`` column says, per version, whether the
median meets the target. The README's Performance table is this output.
"""

from __future__ import annotations

import json
import sys

import _common as c


def _section(doc: dict, name: str) -> dict:
    return next((s.get("data", {}) for s in doc["sections"] if s.get("name") == name), {})


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(str(k), d.get(k)) if isinstance(k, int) else d.get(k)
    return d


def _x(r: dict | None, digits: int = 2) -> str:
    return c.fmt_summary_x(r, digits) if r else "n/a"


def _t(s: dict | None) -> str:
    return c.fmt_summary_time(s) if s else "n/a"


def rows_for(doc: dict) -> list[tuple[str, str, str, bool | None]]:
    """(figure, value, target, met) for one run."""
    lat, app, imp = _section(doc, "latency"), _section(doc, "apply"), _section(doc, "import")
    out = []
    for n, w in ((1000, 8), (200, 8), (50, 8), (1000, 64)):
        h, r = lat.get(f"hotfix/{n}/{w}"), lat.get(f"reload/{n}/{w}")
        if h:
            value = f"{_t(h['patch_gap'])} (no patch {_t(h['idle_gap'])}; reload {_t(r['patch_gap']) if r else 'n/a'})"
            out.append((f"longest worker gap during a patch, N={n}, {w} workers", value, "≤ no patch + 1 ms", h["met"]))
    for label, key in (("apply, first after import, N=1000", "apply"), ("apply, later, N=1000", "later")):
        h, r = _get(app, key, "hotfix", 1000), _get(app, key, "reload", 1000)
        if h and r:
            ratio = c.ratio(h, r)
            out.append((f"{label}: hotfix / reload", f"{_x(ratio)} ({_t(h)} vs {_t(r)})", "≤ 1x",
                        ratio["median"] is not None and ratio["median"] <= 1))
    if imp:
        m = imp["modules"]
        out.append(("`import hotfix; hotfix.install()` / `import logging, hashlib, json`",
                    f"{_x(imp['ratio'])} ({m['hotfix']} vs {m['stdlib']} modules)", "≤ 2x",
                    imp["ratio"]["median"] is not None and imp["ratio"]["median"] <= 2))
    fn = _get(app, "calls", "hotfix", "function")
    if fn:
        out.append(("call cost of a patched function / a fresh one", _x(fn, 3), "1.00 ± 0.03",
                    fn["median"] is not None and abs(fn["median"] - 1) <= 0.03))
    return out


def main(argv: list[str] | None = None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    docs = []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            docs.append(json.load(fh))
    versions = [d["environment"]["python"] for d in docs]
    per = [dict((f, (v, t, m)) for f, v, t, m in rows_for(d)) for d in docs]
    figures: list[str] = []
    for rows in per:
        figures += [f for f in rows if f not in figures]
    table = []
    for f in figures:
        target = next(r[f][1] for r in per if f in r)
        cells = [r[f][0] if f in r else "n/a" for r in per]
        met = " / ".join(c.mark(r[f][2]) if f in r else "n/a" for r in per)
        table.append([f, *cells, target, met])
    print(c.md_table(["figure (min / median)", *(f"Python {v}" for v in versions), "target", "met? (" + " / ".join(versions) + ")"], table))
    print()
    for d in docs:
        env = d["environment"]
        print(f"- Python {env['python']}: {d['mode']} run, {env['date']}, {env['cpus']} CPUs, {d['elapsed_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
