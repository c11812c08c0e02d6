"""Run every benchmark, print one summary table plus each section's tables, write JSON.

    python benchmarks/run_all.py [--quick] [--json OUT]

Each ``bench_*.py`` runs in its own process (``--json`` to a temporary file)
and contributes a section; the summary table collects every section's
headline rows (metric, value, target, met?). ``met?`` is informational:
timings on a shared machine are never pass/fail. ``bench_safepoints.py``
(maintained separately) is included when present: as a section if it
writes the same JSON format, else its output is quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import _common as c

SCRIPTS = ("bench_latency.py", "bench_apply.py", "bench_import.py", "bench_install_scope.py", "bench_heap.py",
           "bench_dryrun.py", "bench_memory.py")
OPTIONAL = ("bench_safepoints.py",)
#: A script that takes longer is cut off (and reported as not completed).
QUICK_TIMEOUT = 900
FULL_TIMEOUT = 1800


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_script(script: str, quick: bool, timeout: float) -> dict:
    cpu = _children_cpu()
    sec = _run_script(script, quick, timeout)
    sec["cpu_seconds"] = _children_cpu() - cpu
    return sec


def _run_script(script: str, quick: bool, timeout: float) -> dict:
    path = os.path.join(c.HERE, script)
    fd, out = tempfile.mkstemp(prefix="hotfix-bench-", suffix=".json")
    os.close(fd)
    started = time.perf_counter()
    try:
        args = [sys.executable, path] + (["--quick"] if quick else []) + ["--json", out]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=c.HERE)
        except subprocess.TimeoutExpired:
            return _failed(script, f"timed out after {timeout:.0f} s", started)
        elapsed = time.perf_counter() - started
        try:
            with open(out, encoding="utf-8") as fh:
                sec = json.load(fh)
        except (OSError, ValueError):
            sec = None
        if proc.returncode == 0 and isinstance(sec, dict) and "summary" in sec:
            sec["elapsed_seconds"] = elapsed
            return sec
        if proc.returncode == 0:  # a script with its own output format: quote it
            text = proc.stdout.strip()
            return c.section(script, f"{script} (output quoted)", tables=["```\n" + text + "\n```"],
                             data={"elapsed_seconds": elapsed}) | {"elapsed_seconds": elapsed}
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        return _failed(script, f"exited {proc.returncode}: {tail}", started)
    finally:
        os.unlink(out)


def _failed(script: str, why: str, started: float) -> dict:
    sec = c.section(script, f"{script} FAILED", notes=[why])
    sec["summary"] = [c.summary_row(f"{script} did not complete", "—", "—", None)]
    sec["elapsed_seconds"] = time.perf_counter() - started
    return sec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a few minutes per Python version on 2 cores")
    parser.add_argument("--json", metavar="OUT", default=os.path.join(c.HERE, "results.json"),
                        help="where to write the results (default: benchmarks/results.json)")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated scripts to run (e.g. latency,apply,import)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    scripts = list(SCRIPTS) + [s for s in OPTIONAL if os.path.exists(os.path.join(c.HERE, s))]
    if args.only:
        wanted = {f"bench_{n.strip()}.py" for n in args.only.split(",")}
        scripts = [s for s in scripts if s in wanted]
    sections = []
    loads = [os.getloadavg()[0]]
    for script in scripts:
        print(f"[run_all] {script} ...", file=sys.stderr, flush=True)
        sec = run_script(script, args.quick, timeout=QUICK_TIMEOUT if args.quick else FULL_TIMEOUT)
        loads.append(os.getloadavg()[0])
        sec["load_average"] = loads[-1]
        print(f"[run_all] {script} done in {sec.get('elapsed_seconds', 0):.0f} s (CPU {sec['cpu_seconds']:.0f} s, "
              f"load average {loads[-1]:.1f})", file=sys.stderr, flush=True)
        sections.append(sec)
    env = c.environment()
    elapsed = time.perf_counter() - started
    cpu = sum(sec["cpu_seconds"] for sec in sections)
    mode = ("quick" if args.quick else "full") + (f" ({args.only} only)" if args.only else "")
    print(f"## hotfix benchmarks: Python {env['python']}, {env['date']}, {mode} run, "
          f"{env['cpus']} CPUs, {elapsed:.0f} s (CPU {cpu:.0f} s; load average {min(loads):.1f}-{max(loads):.1f})\n")
    print(c.render_summary(sections))
    print()
    for sec in sections:
        print(c.render_section(sec))
    print(c.md_table(["script", "wall", "CPU (its processes)", "load average after"],
                     [[sec["name"], f"{sec.get('elapsed_seconds', 0):.0f} s", f"{sec['cpu_seconds']:.0f} s",
                       f"{sec['load_average']:.1f}"] for sec in sections]))
    print()
    doc = {"mode": mode, "environment": env, "elapsed_seconds": elapsed, "cpu_seconds": cpu,
           "load_average": {"min": min(loads), "max": max(loads)},
           "summary": [r | {"section": s["name"]} for s in sections for r in s["summary"]],
           "sections": sections}
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, default=str)
    print(f"(JSON written to {args.json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
