"""Benchmark async units of work (``safepoints.async_critical``): their cost, and what a pause costs a loop.

Run:  PYTHONPATH=. python benchmarks/bench_async_units.py

Prints markdown tables; a measurement, not a test (no pass/fail). Costs are
measured side by side in one run (interleaved rounds) and given as ratios,
since the machine is shared and noisy. Takes well under a minute.

1. Entering and leaving a unit with no pause pending, per request, next to an
   empty async context manager (the floor any middleware pays).
2. A registered event loop serving ``CONCURRENCY`` requests that each await
   ``REQUEST_SECONDS`` between two reads: time for ``pause()`` to be acquired
   (p50/p99 over ``PAUSES`` pauses), with the requests as units (the pause
   waits for those in flight) and without (the loop parks between callbacks,
   requests are split by the swap), and how many requests each mode split
   (read two different versions).
"""

from __future__ import annotations

import asyncio
import platform
import statistics as stats
import sys
import threading
import time

import safepoints

ROUNDS = 7
REQUESTS = 20_000
CONCURRENCY = 32
REQUEST_SECONDS = 0.002
PAUSES = 60


class _Empty:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _requests(kind: str, count: int) -> float:
    start = time.perf_counter()
    if kind == "bare":
        for _ in range(count):
            pass
    elif kind == "empty async with":
        for _ in range(count):
            async with _Empty():
                pass
    else:
        for _ in range(count):
            async with safepoints.async_critical():
                pass
    return (time.perf_counter() - start) / count


def bench_cost() -> list[tuple[str, float, float]]:
    kinds = ("bare", "empty async with", "async_critical")
    samples: dict[str, list[float]] = {k: [] for k in kinds}

    async def main() -> None:
        async with safepoints.asyncio_worker(name="bench"):
            for _ in range(ROUNDS):
                for kind in kinds:
                    samples[kind].append(await _requests(kind, REQUESTS))

    asyncio.run(main())
    floor = stats.median(samples["empty async with"])
    return [(k, stats.median(v) * 1e6, stats.median(v) / floor) for k, v in samples.items()]


def bench_pause(units: bool) -> dict[str, float]:
    state = {"version": 0, "split": 0, "served": 0}
    ready = threading.Event()
    stop = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def request() -> None:
        first = state["version"]
        await asyncio.sleep(REQUEST_SECONDS)
        state["split"] += first != state["version"]
        state["served"] += 1

    async def client() -> None:
        while not stop.is_set():
            if units:
                async with safepoints.async_critical():
                    await request()
            else:
                await request()

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        async with safepoints.asyncio_worker(name="bench loop"):
            clients = [asyncio.create_task(client()) for _ in range(CONCURRENCY)]
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            await asyncio.gather(*clients)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    ready.wait(30)
    acquire: list[float] = []
    gap = threading.Event()
    for _ in range(PAUSES):
        gap.wait(REQUEST_SECONDS * 3)  # let requests run between pauses
        with safepoints.pause(timeout=10) as info:
            state["version"] += 1
        acquire.append(info.acquire_seconds)
    stop.set()
    thread.join(30)
    acquire.sort()
    return {"p50_ms": stats.median(acquire) * 1e3, "p99_ms": acquire[int(len(acquire) * 0.99) - 1] * 1e3,
            "split": state["split"], "served": state["served"]}


def main() -> None:
    print(f"# async units of work (Python {platform.python_version()}, {sys.platform})\n")
    print("## Cost per request, no pause pending\n")
    print("| per request | µs | ratio to an empty `async with` |\n|---|---|---|")
    for kind, micros, ratio in bench_cost():
        print(f"| {kind} | {micros:.2f} | {ratio:.2f}x |")
    print(f"\n## Pauses on a loop serving {CONCURRENCY} concurrent requests of {REQUEST_SECONDS * 1e3:g} ms\n")
    print("| requests | acquire p50 ms | acquire p99 ms | requests split by a swap | requests served |")
    print("|---|---|---|---|---|")
    for units in (True, False):
        r = bench_pause(units)
        label = "async units" if units else "not units (loop parks between callbacks)"
        print(f"| {label} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['split']:.0f} | {r['served']:.0f} |")


if __name__ == "__main__":
    main()
