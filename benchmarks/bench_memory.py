"""Memory retained after 1,000 hotfix apply/rollback cycles (tracemalloc; target ≤ 1 MiB).

One process, one generated module (N = 50) with a one-line fix on disk:
``apply(probation=0)`` then ``rollback()``, 1,000 times, after a warm-up
of 20 cycles. Retained = traced memory after the cycles minus before, after
``gc.collect()``. SPEC §7: old versions are released once they can no
longer be rolled back to. The largest allocation sites that grew are listed
(they say what is being kept).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import time
import tracemalloc

import _common as c
import gen

N = 50
CYCLES = 1000
WARMUP = 20
TARGET = 1024 * 1024
_OURS = (os.sep + "hotfix" + os.sep, os.sep + "verification" + os.sep, os.sep + "safepoints" + os.sep)


def _site(stat: tracemalloc.StatisticDiff) -> str:
    """The innermost frame in hotfix's own packages (else the innermost frame)."""
    frames = list(stat.traceback)
    ours = [f for f in frames if any(p in f.filename for p in _OURS)]
    f = (ours or frames)[0]
    parts = f.filename.split(os.sep)
    return f"{'/'.join(parts[-2:])}:{f.lineno}"


def _grown_sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, key: str) -> list[dict]:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(filters).compare_to(before.filter_traces(filters), key)
    sites: dict[str, list[int]] = {}
    for stat in diff:
        if stat.size_diff > 0:
            acc = sites.setdefault(_site(stat), [0, 0])
            acc[0] += stat.size_diff
            acc[1] += stat.count_diff
    top = sorted(sites.items(), key=lambda kv: -kv[1][0])[:8]
    return [{"site": s, "bytes": b, "blocks": n} for s, (b, n) in top]


def measure(cycles: int, diagnostic_cycles: int = 25) -> dict:
    """Retained memory with 1-frame tracing (cheap); then a short deep-traceback run for the sites."""
    import hotfix

    hotfix.install()
    with gen.Workspace() as ws:
        sys.path.insert(0, ws.dir)
        name = gen.unique_name("benchmem")
        try:
            ws.write(name, gen.render(N))
            importlib.import_module(name)
            ws.write(name, gen.render(N, "fix"))

            def cycle() -> None:
                patch = hotfix.apply(name, probation=0)
                if patch.status != "applied":
                    raise RuntimeError(f"expected an applied patch, got {patch.status}")
                hotfix.rollback()

            for _ in range(WARMUP):
                cycle()
            gc.collect()
            tracemalloc.start(1)
            gc.collect()
            before = tracemalloc.take_snapshot()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            for _ in range(cycles):
                cycle()
            elapsed = time.perf_counter() - t0
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - base
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            # diagnosis: where does a cycle keep memory? (deep tracebacks are slow: a few cycles only)
            tracemalloc.start(10)
            gc.collect()
            d_before = tracemalloc.take_snapshot()
            d_base = tracemalloc.get_traced_memory()[0]
            for _ in range(diagnostic_cycles):
                cycle()
            gc.collect()
            d_retained = tracemalloc.get_traced_memory()[0] - d_base
            d_after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            return {"cycles": cycles, "retained_bytes": retained, "per_cycle_bytes": retained / cycles,
                    "seconds": elapsed, "history_length": len(hotfix.history()),
                    "top_lines": _grown_sites(before, after, "lineno"),
                    "diagnostic_cycles": diagnostic_cycles, "diagnostic_per_cycle_bytes": d_retained / diagnostic_cycles,
                    "top_sites": _grown_sites(d_before, d_after, "traceback")}
        finally:
            sys.path.remove(ws.dir)
            sys.modules.pop(name, None)


def run(quick: bool) -> dict:
    m = measure(CYCLES)
    met = m["retained_bytes"] <= TARGET
    summary = [c.summary_row(f"memory retained after {CYCLES:,} apply/rollback cycles (hotfix)",
                             f"{c.fmt_bytes(m['retained_bytes'])} ({c.fmt_bytes(m['per_cycle_bytes'])}/cycle)",
                             "≤ 1 MiB", met)]
    t_main = c.md_table(["", "value"], [
        [f"cycles (apply + rollback, N={N}, after {WARMUP} warm-up cycles)", f"{CYCLES:,}"],
        ["retained (traced memory after − before, after gc.collect())", c.fmt_bytes(m["retained_bytes"])],
        ["per cycle", c.fmt_bytes(m["per_cycle_bytes"])],
        ["hotfix.history() length at the end", f"{m['history_length']:,}"],
        ["time per cycle (tracemalloc on)", c.fmt_time(m["seconds"] / CYCLES)],
        [f"per cycle over {m['diagnostic_cycles']} more cycles (diagnostic run)",
         c.fmt_bytes(m["diagnostic_per_cycle_bytes"])],
    ])
    t_sites = c.md_table([f"grew during the {m['diagnostic_cycles']} diagnostic cycles (innermost hotfix frame)",
                          "bytes", "blocks"],
                         [[s["site"], c.fmt_bytes(s["bytes"]), f"{s['blocks']:,}"] for s in m["top_sites"]])
    return c.section("memory", "Memory retained across apply/rollback cycles", summary=summary,
                     tables=[t_main, t_sites], data=m,
                     notes=["the same 1,000 cycles in quick and full runs (one measurement: memory is not noisy)."])


if __name__ == "__main__":
    raise SystemExit(c.main(run, __doc__.splitlines()[0]))
