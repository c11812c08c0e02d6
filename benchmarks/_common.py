"""Shared helpers: statistics, markdown tables, child processes, the section format, the CLI.

Every ``bench_*.py`` exposes ``run(quick: bool) -> dict`` returning a *section*::

    {"name": "apply", "title": "...",
     "summary": [{"metric": ..., "value": ..., "target": ..., "met": ...}],
     "tables": ["markdown", ...], "notes": ["...", ...], "data": {...}}

and runs standalone through ``main()`` (``--quick``, ``--json OUT``).
``run_all.py`` runs each script in its own process and merges the sections.
Timings are never pass/fail: ``met`` is informational.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "_driver.py")

CHECK = "✓"
CROSS = "✗"

#: the peers compared with hotfix; "ipython" is IPython's default autoreload engine
#: (ModuleReloader: its source-diffing DeduperReloader first, superreload when that
#: gives up), "ipython-full" forces superreload (``%autoreload 2 --full``).
ENGINES = ("hotfix", "reload", "ipython", "ipython-full", "jurigged")
PEER_PACKAGES = {"ipython": "IPython", "ipython-full": "IPython", "jurigged": "jurigged"}


def available_engines(engines: Iterable[str] = ENGINES) -> tuple[list[str], list[str]]:
    """(engines whose package is importable, engines skipped)."""
    ok, missing = [], []
    for e in engines:
        pkg = PEER_PACKAGES.get(e)
        (ok if pkg is None or importlib.util.find_spec(pkg) is not None else missing).append(e)
    return ok, missing


# --------------------------------------------------------------------------- numbers


def summarize(values: Sequence[float]) -> dict:
    """min and median (the figures we report) of a list of samples."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "n": len(vals)}


def ratio(a: dict, b: dict) -> dict:
    """Ratio of two summaries: min/min and median/median."""
    def div(x, y):
        return x / y if x is not None and y not in (None, 0) else None

    return {"min": div(a["min"], b["min"]), "median": div(a["median"], b["median"])}


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_x(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}x"


def fmt_summary_time(s: dict) -> str:
    return f"{fmt_time(s['min'])} / {fmt_time(s['median'])}"


def fmt_summary_x(r: dict, digits: int = 2) -> str:
    return f"{fmt_x(r['min'], digits)} / {fmt_x(r['median'], digits)}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    if abs(n) >= 1024 * 1024:
        return f"{n / 1024 / 1024:.2f} MiB"
    if abs(n) >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n:.0f} B"


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else (CHECK if ok else CROSS)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_row(metric: str, value: str, target: str, met: bool | None) -> dict:
    return {"metric": metric, "value": value, "target": target, "met": mark(met)}


def section(name: str, title: str, *, summary=(), tables=(), notes=(), data=None) -> dict:
    return {"name": name, "title": title, "summary": list(summary), "tables": list(tables),
            "notes": list(notes), "data": data or {}}


def render_section(sec: dict) -> str:
    out = [f"### {sec['title']}", ""]
    for t in sec["tables"]:
        out += [t, ""]
    for n in sec["notes"]:
        out.append(f"- {n}")
    if sec["notes"]:
        out.append("")
    return "\n".join(out)


def render_summary(sections: Iterable[dict]) -> str:
    rows = [(r["metric"], r["value"], r["target"], r["met"]) for s in sections for r in s["summary"]]
    return md_table(("metric", "value (min / median)", "target", "met?"), rows)


def environment() -> dict:
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable, "platform": platform.platform(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# --------------------------------------------------------------------------- child processes


class ChildFailed(RuntimeError):
    pass


def run_child(config: dict, timeout: float = 120.0, pythonpath: str | None = None) -> dict:
    """Run ``_driver.py`` with ``config`` in a fresh interpreter; return its JSON result.

    ``pythonpath``: a source tree whose ``hotfix``, ``safepoints`` and ``verification``
    the child imports instead of the installed ones (to compare two versions side by side).
    """
    started = time.perf_counter()
    env = None if pythonpath is None else dict(os.environ, PYTHONPATH=os.path.abspath(pythonpath))
    proc = subprocess.run([sys.executable, DRIVER, json.dumps(config)], capture_output=True,
                          text=True, timeout=timeout, cwd=HERE, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise ChildFailed(f"driver {config.get('mode')}/{config.get('engine')} exited {proc.returncode}: {tail}")
    result = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def rotate(items: Sequence, k: int) -> list:
    """``items`` rotated by ``k``: interleaved rounds start with a different engine each time."""
    k %= max(len(items), 1)
    return list(items[k:]) + list(items[:k])


# --------------------------------------------------------------------------- CLI


def main(run: Callable[[bool], dict], description: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes at most)")
    parser.add_argument("--json", metavar="OUT", help="also write the section as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sec = run(args.quick)
    sec["elapsed_seconds"] = time.perf_counter() - started
    sec["environment"] = environment()
    print(f"## {sec['title']} (Python {platform.python_version()}, {'quick' if args.quick else 'full'})\n")
    if sec["summary"]:
        print(render_summary([sec]))
        print()
    print(render_section(sec))
    print(f"({sec['elapsed_seconds']:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(sec, fh, indent=2, default=str)
    return 0
