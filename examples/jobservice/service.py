"""A small job-processing service: a thread pool consuming a queue.

Each worker registers with ``safepoints`` and checkpoints between jobs, so
hotfix can park it for the instant the code is swapped. Nothing here knows
about patches; the billing rules live in ``billing``.
"""

from __future__ import annotations

import queue
import threading

import billing

import safepoints


class JobService:
    def __init__(self, workers: int = 4) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.results: dict[int, dict] = {}
        self.errors: dict[int, str] = {}
        self.submitted = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"worker-{i}", daemon=True) for i in range(workers)]

    def start(self) -> JobService:
        for t in self._threads:
            t.start()
        return self

    def submit(self, order: dict) -> None:
        with self.lock:
            self.submitted += 1
        self.jobs.put(order)

    def _run(self) -> None:
        with safepoints.worker(threading.current_thread().name):
            while not self._stop.is_set():
                safepoints.checkpoint()
                with safepoints.idle():
                    try:
                        order = self.jobs.get(timeout=0.05)
                    except queue.Empty:
                        continue
                try:
                    with safepoints.critical():
                        result = billing.invoice(order)
                    with self.lock:
                        self.results[order["id"]] = result
                except Exception as exc:  # a failed job is recorded, the worker carries on
                    with self.lock:
                        self.errors[order["id"]] = f"{type(exc).__name__}: {exc}"
                finally:
                    self.jobs.task_done()

    def drain(self) -> None:
        self.jobs.join()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.submitted, len(self.results), len(self.errors)
