"""One table of issue 16's figures across Python versions, from ``run_all.py`` JSON results.

    python benchmarks/report.py r-3.11.json r-3.12.json r-3.13.json
    python benchmarks/report.py --readme README.md r-3.11.json r-3.12.json r-3.13.json

Each column is one run (one Python version); each cell is min / median as
measured in that run. The ``met?`` column says, per version, whether the
median meets the target ("limit": outside the target where the README
documents why it cannot be met on that version). Below the table: each
run's mode, date, wall and CPU time and load average, and how many targets
each version meets. ``--readme`` writes the same text into the README,
between the ``<!-- report.py: begin -->`` and ``<!-- report.py: end -->``
lines of its Performance section.
"""

from __future__ import annotations

import argparse
import json
import re

import _common as c

BEGIN = "<!-- report.py: begin -->"
END = "<!-- report.py: end -->"
#: Python versions where a patched function is not call-specialized again (README: "Call cost after a patch").
CALL_COST_LIMIT_FROM = (3, 13)


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


def _version(doc: dict) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", doc["environment"]["python"])[:2])


def rows_for(doc: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met mark) for one run."""
    lat, app, imp = _section(doc, "latency"), _section(doc, "apply"), _section(doc, "import")
    out = []
    for n, w in ((1000, 8), (200, 8), (50, 8), (1000, 64)):
        h, r = lat.get(f"hotfix/{n}/{w}"), lat.get(f"reload/{n}/{w}")
        if h:
            value = f"{_t(h['patch_gap'])} (no patch {_t(h['idle_gap'])}; reload {_t(r['patch_gap']) if r else 'n/a'})"
            out.append((f"longest worker gap during a patch, N={n}, {w} workers", value, "≤ no patch + 1 ms",
                        c.mark(h["met"])))
    for label, key in (("apply, first after import, N=1000", "apply"), ("apply, later, N=1000", "later")):
        h, r = _get(app, key, "hotfix", 1000), _get(app, key, "reload", 1000)
        if h and r:
            ratio = c.ratio(h, r)
            out.append((f"{label}: hotfix / reload", f"{_x(ratio)} ({_t(h)} vs {_t(r)})", "≤ 1x",
                        c.mark(None if ratio["median"] is None else ratio["median"] <= 1)))
    if imp:
        m = imp["modules"]
        out.append(("`import hotfix; hotfix.install()` / `import logging, hashlib, json`",
                    f"{_x(imp['ratio'])} ({m['hotfix']} vs {m['stdlib']} modules)", "≤ 2x",
                    c.mark(None if imp["ratio"]["median"] is None else imp["ratio"]["median"] <= 2)))
    fn = _get(app, "calls", "hotfix", "function")
    if fn:
        within = None if fn["median"] is None else abs(fn["median"] - 1) <= 0.03
        mark = c.mark(within)
        if within is False and _version(doc) >= CALL_COST_LIMIT_FROM:
            mark = "limit"
        out.append(("call cost of a patched function / a fresh one", _x(fn, 3),
                    "1.00 ± 0.03 (3.13+: documented limit)", mark))
    return out


def _run_line(doc: dict) -> str:
    env = doc["environment"]
    extra = ""
    if "cpu_seconds" in doc:
        extra += f", CPU {doc['cpu_seconds']:.0f} s"
    load = doc.get("load_average")
    if load:
        extra += f", load average {load['min']:.1f}-{load['max']:.1f}"
    return f"- Python {env['python']}: {doc['mode']} run, {env['date']}, {env['cpus']} CPUs, {doc['elapsed_seconds']:.0f} s{extra}"


def render(docs: list[dict]) -> str:
    versions = [d["environment"]["python"] for d in docs]
    per = [{f: (v, t, m) for f, v, t, m in rows_for(d)} for d in docs]
    figures: list[str] = []
    for rows in per:
        figures += [f for f in rows if f not in figures]
    table = []
    for f in figures:
        target = next(r[f][1] for r in per if f in r)
        cells = [r[f][0] if f in r else "n/a" for r in per]
        met = " / ".join(r[f][2] if f in r else "n/a" for r in per)
        table.append([f, *cells, target, met])
    lines = [c.md_table(["figure (min / median)", *(f"Python {v}" for v in versions), "target",
                         "met? (" + " / ".join(versions) + ")"], table), ""]
    lines += [_run_line(d) for d in docs]
    counts = []
    for v, rows in zip(versions, per, strict=True):
        marks = [m for _, _, m in rows.values()]
        counts.append(f"{v}: {marks.count(c.CHECK)} of {len(figures)} met"
                      + (f", {marks.count('limit')} documented limit" if "limit" in marks else "")
                      + (f", {len(figures) - len(marks)} not measured" if len(marks) < len(figures) else ""))
    lines.append("- targets (medians): " + "; ".join(counts))
    return "\n".join(lines)


def write_readme(path: str, text: str) -> None:
    """Replace what lies between the BEGIN and END marker lines of ``path`` with ``text``."""
    with open(path, encoding="utf-8") as fh:
        readme = fh.read()
    start, stop = readme.find(BEGIN), readme.find(END)
    if start < 0 or stop < start:
        raise SystemExit(f"{path}: no '{BEGIN}' ... '{END}' lines to write between")
    readme = readme[: start + len(BEGIN)] + "\n\n" + text + "\n\n" + readme[stop:]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="run_all.py --json outputs, one per Python version")
    parser.add_argument("--readme", metavar="PATH", help="also write the table into this README, between the markers")
    args = parser.parse_args(argv)
    docs = []
    for p in args.results:
        with open(p, encoding="utf-8") as fh:
            docs.append(json.load(fh))
    text = render(docs)
    print(text)
    if args.readme:
        write_readme(args.readme, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
