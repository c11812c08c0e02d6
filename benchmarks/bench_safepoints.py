"""Benchmark safepoints: checkpoint() cost and time to park N workers.

Run:  PYTHONPATH=. python benchmarks/bench_safepoints.py [--quick]

Prints markdown tables. Machines are shared and noisy, so costs are measured
side by side in one run (interleaved rounds) and reported as ratios; the park
times are absolute but come with the target they are compared to. There is
no pass/fail: this is a measurement, not a test. Takes well under a minute.

1. ``checkpoint()`` with no pause pending vs an empty Python function call
   (target: ratio <= 1.5x), plus the same through a module attribute
   (``safepoints.checkpoint()`` vs ``mod.empty()``) and inside a tiny job loop.
2. Time for ``pause()`` to park N workers (N = 1, 8, 64), p50/p99 over up
   to ``PAUSES`` pauses (within a time budget): *busy* workers that
   checkpoint once per tiny job (target: p99 <= 1 ms), next to the *floor*
   (the same threads parked by a hand-rolled flag and a raw lock each), and
   *idle* workers blocked in ``idle()`` on a queue.
"""

from __future__ import annotations

import _thread
import itertools
import platform
import queue
import statistics as stats
import sys
import threading
import time
import timeit
import types

import safepoints

ROUNDS = 15
NUMBER = 300_000
PAUSES = 200
WORKER_COUNTS = (1, 8, 64)
GAP_SECONDS = 0.0005  # let workers run between two pauses
BUDGET_SECONDS = 7.0  # per configuration: 64 CPU-bound threads make every pause cycle slow


def empty() -> None:
    pass


def _interleaved(timers: dict[str, timeit.Timer], number: int) -> dict[str, list[float]]:
    """Per-call seconds for each timer, rounds interleaved so noise hits all alike."""
    out: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            out[name].append(timer.timeit(number) / number)
    return out


def bench_checkpoint() -> list[tuple[str, str, float, float, float, float]]:
    mod = types.ModuleType("mod")
    mod.empty = empty  # type: ignore[attr-defined]

    pairs = [
        ("checkpoint()", "empty()", "f()", "g()", {"f": safepoints.checkpoint, "g": empty}, NUMBER),
        (
            "safepoints.checkpoint()",
            "mod.empty()",
            "sp.checkpoint()",
            "mod.empty()",
            {"sp": safepoints, "mod": mod},
            NUMBER,
        ),
        (
            "job loop with checkpoint()",
            "job loop with empty()",
            "f(100)",
            "g(100)",
            {"f": _job_checkpoint, "g": _job_empty},
            NUMBER // 100,
        ),
    ]
    rows = []
    for label, base_label, stmt, base_stmt, ns, number in pairs:
        timers = {
            "x": timeit.Timer(stmt, globals=ns),
            "base": timeit.Timer(base_stmt, globals=ns),
        }
        res = _interleaved(timers, number)
        ratios = [x / b for x, b in zip(res["x"], res["base"], strict=True)]
        rows.append(
            (
                label,
                base_label,
                min(res["x"]) * 1e9,
                min(res["base"]) * 1e9,
                min(res["x"]) / min(res["base"]),
                stats.median(ratios),
            )
        )
    return rows


def _job_checkpoint(n: int) -> int:
    cp = safepoints.checkpoint
    x = 0
    for _ in range(n):
        cp()
        x += 1
    return x


def _job_empty(n: int) -> int:
    e = empty
    x = 0
    for _ in range(n):
        e()
        x += 1
    return x


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def bench_park(kind: str, n: int) -> tuple[list[float], list[float]]:
    """(acquire_seconds, stall_seconds) of up to PAUSES pauses over n workers."""
    stop = threading.Event()
    started = threading.Barrier(n + 1, timeout=30)
    q: queue.Queue[int | None] = queue.Queue()

    def busy() -> None:
        with safepoints.worker("busy"):
            started.wait()
            x = 0
            while not stop.is_set():
                safepoints.checkpoint()
                x += 1  # the tiny job

    def idler() -> None:
        with safepoints.worker("idle"):
            started.wait()
            while True:
                with safepoints.idle():
                    item = q.get()
                if item is None:
                    return

    target = busy if kind == "busy" else idler
    threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    started.wait()
    acquire, stall = [], []
    deadline = time.perf_counter() + BUDGET_SECONDS
    try:
        while len(acquire) < PAUSES and time.perf_counter() < deadline:
            time.sleep(GAP_SECONDS)
            with safepoints.pause(timeout=5.0) as info:
                pass
            acquire.append(info.acquire_seconds)
            assert info.stall_seconds is not None
            stall.append(info.stall_seconds)
    finally:
        stop.set()
        for _ in threads:
            q.put(None)
        for t in threads:
            t.join(30)
    return acquire, stall


def bench_park_floor(n: int) -> list[float]:
    """The same busy workers parked by the cheapest hand-rolled protocol possible.

    Each worker tests a plain global flag per job and blocks on its own raw
    lock; the last one to block releases the pauser. No registry, no
    condition variables: what remains is the cost of N GIL handoffs, i.e.
    the floor any Python-level safepoint scheme pays for N busy threads.
    """
    flag = [False]
    stop = [False]
    counter = [itertools.count()]
    all_parked = _thread.allocate_lock()
    all_parked.acquire()
    gates = [_thread.allocate_lock() for _ in range(n)]
    for g in gates:
        g.acquire()
    started = threading.Barrier(n + 1, timeout=30)

    def busy(gate: _thread.LockType) -> None:
        started.wait()
        x = 0
        while not stop[0]:
            if flag[0]:
                if next(counter[0]) == n - 1:
                    all_parked.release()
                gate.acquire()  # parked until the pauser releases this gate
                continue
            x += 1

    threads = [threading.Thread(target=busy, args=(g,), daemon=True) for g in gates]
    for t in threads:
        t.start()
    started.wait()
    acquire = []
    deadline = time.perf_counter() + BUDGET_SECONDS
    try:
        while len(acquire) < PAUSES and time.perf_counter() < deadline:
            time.sleep(GAP_SECONDS)
            t0 = time.perf_counter()
            counter[0] = itertools.count()
            flag[0] = True
            all_parked.acquire()
            acquire.append(time.perf_counter() - t0)
            flag[0] = False
            for g in gates:
                g.release()
    finally:
        stop[0] = True
        for t in threads:
            t.join(30)
    return acquire


def main(argv: list[str] | None = None) -> None:
    global ROUNDS, PAUSES, BUDGET_SECONDS
    args = sys.argv[1:] if argv is None else argv
    if "--quick" in args:  # run_all --quick: fewer rounds and pauses (--json is ignored: run_all quotes this output)
        ROUNDS, PAUSES, BUDGET_SECONDS = 7, 100, 3.0
    t0 = time.perf_counter()
    print(
        f"# safepoints benchmark — Python {platform.python_version()} "
        f"({sys.implementation.name}), switch interval {sys.getswitchinterval() * 1e3:g} ms\n"
    )

    print("## checkpoint() with no pause pending (target: ratio <= 1.5x)\n")
    print(
        "| measured | baseline | measured ns (min) | baseline ns (min) "
        "| ratio of mins | median of per-round ratios |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for label, base, ns, base_ns, rmin, rmed in bench_checkpoint():
        print(f"| `{label}` | `{base}` | {ns:.1f} | {base_ns:.1f} | {rmin:.2f}x | {rmed:.2f}x |")
    print(
        f"\n{ROUNDS} interleaved rounds; the job loops are 100 iterations of `x += 1` "
        "each with one call per iteration (ns per loop)."
    )

    print(
        f"\n## time to park N workers (up to {PAUSES} pauses or {BUDGET_SECONDS:g} s each; "
        "target for busy: p99 <= 1 ms)\n"
    )
    print(
        "| workers | N | pauses | acquire p50 (ms) | acquire p99 (ms) | max (ms) "
        "| floor p50 (ms) | floor p99 (ms) | p99 vs floor | p99 / 1 ms | stall p50 (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("busy", "idle"):
        for n in WORKER_COUNTS:
            acq, stall = bench_park(kind, n)
            p50, p99 = _percentile(acq, 50), _percentile(acq, 99)
            if kind == "busy":
                floor = bench_park_floor(n)
                f50, f99 = _percentile(floor, 50), _percentile(floor, 99)
                floor_cols = f"{f50 * 1e3:.3f} | {f99 * 1e3:.3f} | {p99 / f99:.2f}x"
            else:
                floor_cols = "— | — | —"
            print(
                f"| {kind} | {n} | {len(acq)} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} "
                f"| {max(acq) * 1e3:.3f} | {floor_cols} | {p99 / 1e-3:.2f} "
                f"| {_percentile(stall, 50) * 1e3:.3f} |"
            )
    print(
        "\n_floor_: the same busy threads parked by a hand-rolled flag + one raw lock "
        "per thread (N GIL handoffs, nothing else). With many CPU-bound threads the "
        "pauser itself waits its turn for the GIL between pauses, hence the time budget."
    )
    print(f"\n_total benchmark time: {time.perf_counter() - t0:.1f} s_")


if __name__ == "__main__":
    main()
