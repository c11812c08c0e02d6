"""A plain job service: a ThreadPoolExecutor working through jobs. No hotfix code.

    hotfix run --socket-dir /run/jobs/hotfix --cover-executors -- python service.py

Each job appends one JSON line to $RESULTS (default: results.jsonl): the
result, or the error and which process raised it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pricing

stop = threading.Event()
lock = threading.Lock()


def job(n: int, out) -> None:  # a text file
    time.sleep(0.02)  # the I/O part of a job
    try:
        record = {"n": n, "total": pricing.total(n), "pid": os.getpid()}
    except Exception as exc:  # a failed job is recorded, the service goes on
        record = {"n": n, "error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}
    with lock:
        out.write(json.dumps(record) + "\n")
        out.flush()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open(os.environ.get("RESULTS", "results.jsonl"), "a", encoding="utf-8") as out, \
            ThreadPoolExecutor(max_workers=4) as pool:
        n = 0
        while not stop.is_set():
            futures = [pool.submit(job, n + i, out) for i in range(8)]
            for future in futures:
                future.result()
            n += 8


if __name__ == "__main__":
    main()
