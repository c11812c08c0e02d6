"""Tests for the safepoints package (thread coordination).

Threads meet on ``threading.Event`` gates with timeouts; where a test must
observe a state that has no event (e.g. "this worker is now parked") it polls
``safepoints.statistics()`` with a deadline. Every wait is bounded, so a bug
fails the test instead of hanging it, and every test joins its threads and
leaves no registered worker behind (checked by an autouse fixture).
"""

from __future__ import annotations

import os
import pickle
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import safepoints
from safepoints import PauseInfo, PauseTimeout, Statistics, WorkerInfo

T = 10.0  # generous bound for every gate: only reached when something is broken
HERE = os.path.basename(__file__)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _no_workers_left_behind() -> Iterator[None]:
    assert safepoints.statistics().workers == ()
    yield
    stats = safepoints.statistics()
    assert stats.workers == (), f"test left workers registered: {stats.workers}"
    assert not stats.pause_pending
    assert safepoints.current_pause_holder() is None


class Threads:
    """Starts threads; ``join()`` sets ``stop``, joins each with a timeout, re-raises errors."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[[], object], name: str | None = None) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # reported by join()
                self.errors.append(e)

        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(T)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads did not finish: {alive}"
        errors, self.errors = self.errors, []
        if errors:
            raise errors[0]


@pytest.fixture
def threads() -> Iterator[Threads]:
    ts = Threads()
    try:
        yield ts
    finally:
        ts.join()


class Busy:
    """A worker that checkpoints once per tiny job until ``threads.stop`` is set."""

    def __init__(self, threads: Threads, name: str) -> None:
        self.name = name
        self.started = threading.Event()
        self.progress = threading.Event()
        self.jobs = 0
        self._stop = threads.stop
        self.thread = threads.start(self.run, name=name)

    def run(self) -> None:
        with safepoints.worker(self.name):
            self.started.set()
            while not self._stop.is_set():
                safepoints.checkpoint()
                self.jobs += 1
                self.progress.set()

    def wait_progress(self) -> None:
        self.progress.clear()
        assert self.progress.wait(T), f"{self.name} made no progress"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:
    """Poll an observable state with a deadline (for states that have no event)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        tick.wait(0.001)


def info_of(name: str) -> WorkerInfo | None:
    for w in safepoints.statistics().workers:
        if w.name == name:
            return w
    return None


def state_of(name: str) -> str | None:
    w = info_of(name)
    return None if w is None else w.state


def pause_pending() -> bool:
    return safepoints.current_pause_holder() is not None


# --------------------------------------------------------------------------- basics


def test_public_api() -> None:
    assert sorted(safepoints.__all__) == sorted(
        [
            "HeldWorker",
            "PauseInfo",
            "PauseTimeout",
            "Statistics",
            "WorkerInfo",
            "async_critical",
            "asyncio_worker",
            "checkpoint",
            "critical",
            "current_pause_holder",
            "idle",
            "pause",
            "statistics",
            "worker",
        ]
    )
    for name in safepoints.__all__:
        assert getattr(safepoints, name) is not None
    assert issubclass(PauseTimeout, Exception)
    assert "timeout" in (PauseTimeout.__doc__ or "")


def test_everything_is_a_noop_without_registration() -> None:
    safepoints.checkpoint()
    with safepoints.idle(), safepoints.critical():
        safepoints.checkpoint()
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 0
        assert safepoints.current_pause_holder() == threading.get_ident()
        safepoints.checkpoint()  # the holder never parks
    assert safepoints.current_pause_holder() is None


def test_unregistered_thread_is_not_stopped_by_a_pause(threads: Threads) -> None:
    done = threading.Event()

    def outsider() -> None:
        safepoints.checkpoint()
        with safepoints.idle():
            pass
        with safepoints.critical():
            safepoints.checkpoint()
        done.set()

    with safepoints.pause(timeout=T):
        threads.start(outsider)
        assert done.wait(T), "an unregistered thread parked"


def test_pause_parks_busy_workers_and_releases_them(threads: Threads) -> None:
    busy = [Busy(threads, f"busy-{i}") for i in range(3)]
    for b in busy:
        assert b.started.wait(T)
    with safepoints.pause(timeout=T) as info:
        assert isinstance(info, PauseInfo)
        assert info.workers == 3
        assert not info.nested
        assert info.stall_seconds is None
        jobs = [b.jobs for b in busy]
        stats = safepoints.statistics()
        assert stats.pause_pending
        assert stats.pause_holder == threading.get_ident()
        assert (stats.parked, stats.running) == (3, 0)
        busy[0].progress.clear()
        assert not busy[0].progress.wait(0.02)  # bounded negative check: nobody runs
        assert [b.jobs for b in busy] == jobs
    assert info.stall_seconds is not None and info.stall_seconds > 0
    assert info.acquire_seconds >= 0
    for b in busy:
        b.wait_progress()


def test_invalid_timeout_rejected() -> None:
    with pytest.raises(ValueError):
        safepoints.pause(timeout=-1)
    with pytest.raises(ValueError):
        safepoints.pause(timeout=float("nan"))


# --------------------------------------------------------------------------- critical / idle


def test_critical_delays_pause_until_block_ends(threads: Threads) -> None:
    in_critical = threading.Event()
    acquired = threading.Event()
    order: list[str] = []

    def work() -> None:
        with safepoints.worker("crit"):
            with safepoints.critical():
                with safepoints.critical():  # reentrant
                    in_critical.set()
                    wait_until(pause_pending, "the pause is requested")
                    safepoints.checkpoint()  # inside critical: no-op
                assert state_of("crit") == "critical"  # still inside the outer block
                assert not acquired.wait(0.05), "pause acquired inside a critical block"
                order.append("critical-end")
            order.append("after-pause")  # the outer exit parked until the pause ended

    threads.start(work, name="crit")
    assert in_critical.wait(T)
    with safepoints.pause(timeout=T):
        order.append("paused")
        acquired.set()
        assert state_of("crit") == "parked"
    threads.join()
    assert order == ["critical-end", "paused", "after-pause"]


def test_idle_counts_as_parked_and_parks_on_exit(threads: Threads) -> None:
    jobs: queue.Queue[str] = queue.Queue()
    waiting = threading.Event()
    got: list[str] = []
    after_idle = threading.Event()

    def work() -> None:
        with safepoints.worker("idler"):
            with safepoints.idle():
                waiting.set()
                got.append(jobs.get(timeout=T))
            after_idle.set()

    threads.start(work)
    assert waiting.wait(T)
    wait_until(lambda: state_of("idler") == "idle", "the worker is idle")
    with safepoints.pause(timeout=T) as info:  # acquired without waiting for the idler
        assert info.workers == 1
        jobs.put("job")
        wait_until(lambda: state_of("idler") == "parked", "the idler woke into a park")
        assert got == ["job"]
        assert not after_idle.is_set()
    assert after_idle.wait(T)


def test_critical_entered_during_pause_parks_first(threads: Threads) -> None:
    jobs: queue.Queue[str] = queue.Queue()
    waiting = threading.Event()
    entered = threading.Event()

    def work() -> None:
        with safepoints.worker("late-critical"), safepoints.idle():
            waiting.set()
            jobs.get(timeout=T)
            with safepoints.critical():  # idle -> critical must not slip into the pause
                entered.set()

    threads.start(work)
    assert waiting.wait(T)
    wait_until(lambda: state_of("late-critical") == "idle", "the worker is idle")
    with safepoints.pause(timeout=T):
        jobs.put("job")
        wait_until(lambda: state_of("late-critical") == "parked", "the worker parked")
        assert not entered.is_set()
    assert entered.wait(T)


def test_idle_inside_critical_is_not_a_safepoint(threads: Threads) -> None:
    inside = threading.Event()
    release = threading.Event()

    def work() -> None:
        with safepoints.worker("crit-idle"), safepoints.critical(), safepoints.idle():
            inside.set()
            release.wait(T)

    threads.start(work)
    assert inside.wait(T)
    assert state_of("crit-idle") == "critical"
    with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.05):
        pass
    assert [w.name for w in ei.value.late] == ["crit-idle"]
    release.set()


# --------------------------------------------------------------------------- timeouts


def test_pause_timeout_names_late_worker_and_releases_everyone(threads: Threads) -> None:
    spin = [True]
    spinning = threading.Event()
    finished = threading.Event()
    line: dict[str, int] = {}

    def slowpoke() -> None:
        with safepoints.worker("slowpoke"):
            line["n"] = sys._getframe().f_lineno + 2
            spinning.set()
            while spin[0]:
                pass
            safepoints.checkpoint()
            finished.set()

    ok = Busy(threads, "ok")
    threads.start(slowpoke, name="slowpoke-thread")
    assert spinning.wait(T) and ok.started.wait(T)
    before = safepoints.statistics().pause_timeouts

    with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.2):
        pytest.fail("the pause must not be acquired")

    err = ei.value
    assert [w.name for w in err.late] == ["slowpoke"]
    late = err.late[0]
    assert late.state == "running"
    assert late.thread_id == threads.threads[-1].ident
    assert late.native_id == threads.threads[-1].native_id
    assert late.where is not None
    where_re = rf"{re.escape(HERE)}:{line['n']} in .*slowpoke"
    assert re.search(where_re, late.where), late.where
    message = str(err)
    assert "'slowpoke'" in message and re.search(where_re, message), message
    assert "'ok'" not in message  # the parked worker is not late
    assert err.holder is None

    # released: nothing pending, the parked worker runs again
    stats = safepoints.statistics()
    assert not stats.pause_pending
    assert stats.pause_timeouts == before + 1
    ok.wait_progress()
    spin[0] = False
    assert finished.wait(T)


def test_pause_timeout_pickles() -> None:
    info = WorkerInfo(name="w", thread_id=1, native_id=2, state="running", where="f.py:1 in g")
    err = PauseTimeout("late: w", late=(info,))
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == "late: w" and copy.late == (info,) and copy.holder is None


def test_second_pause_waits_for_first(threads: Threads) -> None:
    holding = threading.Event()
    release = threading.Event()
    second: list[PauseInfo] = []

    def first() -> None:
        with safepoints.pause(timeout=T):
            holding.set()
            assert release.wait(T)

    threads.start(first)
    assert holding.wait(T)
    holder = safepoints.current_pause_holder()
    assert holder == threads.threads[0].ident

    with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.05):
        pass
    assert ei.value.late == () and ei.value.holder == holder
    assert safepoints.current_pause_holder() == holder  # the first pause is untouched

    def second_pauser() -> None:
        with safepoints.pause(timeout=T) as info:
            second.append(info)

    t = threads.start(second_pauser)
    release.set()
    t.join(T)
    assert len(second) == 1 and not second[0].nested


def test_two_workers_pausing_at_once_do_not_deadlock(threads: Threads) -> None:
    ready = threading.Barrier(2, timeout=T)
    results: list[str] = []

    def pauser(name: str) -> None:
        with safepoints.worker(name):
            ready.wait()
            with safepoints.pause(timeout=T):
                results.append(name)
                holder = safepoints.current_pause_holder()
                assert holder == threading.get_ident()
            safepoints.checkpoint()

    threads.start(lambda: pauser("p1"))
    threads.start(lambda: pauser("p2"))
    threads.join()
    assert sorted(results) == ["p1", "p2"]


def test_worker_in_critical_waiting_for_a_pause_is_not_parked(threads: Threads) -> None:
    ready = threading.Event()
    got = threading.Event()

    def work() -> None:
        with safepoints.worker("crit-pauser"), safepoints.critical():
            ready.set()
            wait_until(pause_pending, "the main pause is requested")
            with safepoints.pause(timeout=T):  # waits for the main pause to give up
                got.set()

    threads.start(work)
    assert ready.wait(T)
    with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.3):
        pass
    assert [w.name for w in ei.value.late] == ["crit-pauser"]
    assert got.wait(T)


def test_pause_holder_dying_releases_the_pause(threads: Threads) -> None:
    b = Busy(threads, "busy")
    assert b.started.wait(T)
    kept: list[object] = []

    def holder() -> None:
        cm = safepoints.pause(timeout=T)
        cm.__enter__()  # never exited: the thread ends holding the pause
        kept.append(cm)

    t = threading.Thread(target=holder)
    t.start()
    t.join(T)
    assert not t.is_alive()
    b.wait_progress()  # the parked worker noticed the dead holder and resumed
    assert safepoints.current_pause_holder() is None
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 1


# --------------------------------------------------------------------------- reentrancy


def test_nested_worker_registers_once() -> None:
    with safepoints.worker("outer"):
        with safepoints.worker("inner"):
            names = [w.name for w in safepoints.statistics().workers]
            assert names == ["outer"]
        assert [w.name for w in safepoints.statistics().workers] == ["outer"]
    assert safepoints.statistics().workers == ()


def test_default_worker_name_is_thread_name() -> None:
    with safepoints.worker():
        assert [w.name for w in safepoints.statistics().workers] == [
            threading.current_thread().name
        ]


def test_worker_block_must_exit_in_its_thread(threads: Threads) -> None:
    cm = safepoints.worker("here")
    cm.__enter__()
    failed: list[BaseException] = []

    def other() -> None:
        try:
            cm.__exit__(None, None, None)
        except RuntimeError as e:
            failed.append(e)

    threads.start(other)
    threads.join()
    assert failed
    cm.__exit__(None, None, None)


def test_nested_pause_is_reentrant(threads: Threads) -> None:
    b = Busy(threads, "busy")
    assert b.started.wait(T)
    with safepoints.pause(timeout=T) as outer:
        with safepoints.pause(timeout=T) as inner:
            assert inner.nested and not outer.nested
            assert inner.workers == 1
            assert safepoints.current_pause_holder() == threading.get_ident()
        assert inner.stall_seconds is not None
        assert outer.stall_seconds is None
        # still held after the inner block
        assert safepoints.statistics().pause_pending
        assert state_of("busy") == "parked"
    assert outer.stall_seconds is not None
    assert outer.stall_seconds >= inner.stall_seconds
    b.wait_progress()


def test_pause_from_a_worker_itself(threads: Threads) -> None:
    other = Busy(threads, "other")
    assert other.started.wait(T)
    seen: list[object] = []
    done = threading.Event()

    def self_pauser() -> None:
        with safepoints.worker("self-pauser"):
            with safepoints.pause(timeout=T) as info:
                seen.append(info.workers)
                safepoints.checkpoint()  # the holder never parks
                with safepoints.critical(), safepoints.idle():
                    pass
                seen.append(state_of("other"))
                seen.append(state_of("self-pauser"))
            safepoints.checkpoint()
            done.set()

    threads.start(self_pauser)
    assert done.wait(T)
    other.wait_progress()
    threads.join()
    assert seen == [1, "parked", "running"]


# --------------------------------------------------------------------------- dead threads


def test_thread_exiting_while_registered_does_not_block_pause() -> None:
    kept: list[object] = []

    def leaver() -> None:
        cm = safepoints.worker("leaver")
        cm.__enter__()  # never exited
        kept.append(cm)

    t = threading.Thread(target=leaver)
    t.start()
    t.join(T)
    assert not t.is_alive()
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 0
    assert safepoints.statistics().workers == ()


def test_thread_dying_while_a_pause_waits_for_it() -> None:
    kept: list[object] = []
    registered = threading.Event()

    def leaver() -> None:
        cm = safepoints.worker("dies-late")
        cm.__enter__()
        kept.append(cm)
        registered.set()
        wait_until(pause_pending, "the pause is requested")
        # return without unregistering or checkpointing

    t = threading.Thread(target=leaver)
    t.start()
    assert registered.wait(T)
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 0
    assert info.acquire_seconds < T / 2
    t.join(T)
    assert not t.is_alive()


def test_registering_during_a_pause_parks_immediately(threads: Threads) -> None:
    entered = threading.Event()

    def newcomer() -> None:
        with safepoints.worker("newcomer"):
            entered.set()

    with safepoints.pause(timeout=T):
        threads.start(newcomer)
        wait_until(lambda: state_of("newcomer") == "parked", "the newcomer parked")
        assert not entered.is_set()
    assert entered.wait(T)


# --------------------------------------------------------------------------- statistics


def test_statistics_content(threads: Threads) -> None:
    gate = threading.Event()
    ready = {n: threading.Event() for n in ("idle", "critical", "running")}
    jobs: queue.Queue[None] = queue.Queue()

    def idle_worker() -> None:
        with safepoints.worker("w-idle"), safepoints.idle():
            ready["idle"].set()
            jobs.get(timeout=T)

    def critical_worker() -> None:
        with safepoints.worker("w-critical"), safepoints.critical():
            ready["critical"].set()
            gate.wait(T)

    def running_worker() -> None:
        with safepoints.worker("w-running"):
            ready["running"].set()
            gate.wait(T)
            safepoints.checkpoint()

    ts = {
        "w-idle": threads.start(idle_worker),
        "w-critical": threads.start(critical_worker),
        "w-running": threads.start(running_worker),
    }
    for ev in ready.values():
        assert ev.wait(T)
    wait_until(lambda: state_of("w-idle") == "idle", "the idle worker waits")
    stats = safepoints.statistics()
    assert isinstance(stats, Statistics)
    by_name = {w.name: w for w in stats.workers}
    assert set(by_name) == set(ts)
    for name, t in ts.items():
        assert by_name[name].thread_id == t.ident
        assert by_name[name].native_id == t.native_id
        assert by_name[name].where is not None
    assert by_name["w-idle"].state == "idle"
    assert by_name["w-critical"].state == "critical"
    assert by_name["w-running"].state == "running"
    assert (stats.idle, stats.critical, stats.running, stats.parked) == (1, 1, 1, 0)
    assert not stats.pause_pending and stats.pause_holder is None
    before = stats.pauses

    gate.set()  # the critical worker leaves, the running one checkpoints
    jobs.put(None)
    with safepoints.pause(timeout=T):
        pass
    stats = safepoints.statistics()
    assert stats.pauses == before + 1
    assert stats.last_stall_seconds is not None and stats.max_stall_seconds is not None


def test_parked_worker_reports_where_it_parked(threads: Threads) -> None:
    started = threading.Event()
    line: dict[str, int] = {}

    def work() -> None:
        with safepoints.worker("parker"):
            started.set()
            while not threads.stop.is_set():
                line["n"] = sys._getframe().f_lineno + 1
                safepoints.checkpoint()

    threads.start(work)
    assert started.wait(T)
    with safepoints.pause(timeout=T):
        w = info_of("parker")
        assert w is not None and w.state == "parked"
        assert w.where is not None
        assert re.search(rf"{re.escape(HERE)}:{line['n']} in .*work$", w.where), w.where


# --------------------------------------------------------------------------- torn reads

A = 0
B = 0


def test_no_torn_reads_across_100_pauses(threads: Threads) -> None:
    global A, B
    n_workers, cycles = 8, 100
    torn = [0] * n_workers
    progress = [threading.Event() for _ in range(n_workers)]
    started = [threading.Event() for _ in range(n_workers)]

    def work(i: int) -> None:
        with safepoints.worker(f"torn-{i}"):
            started[i].set()
            while not threads.stop.is_set():
                safepoints.checkpoint()
                # one job: read a, do some work, read b
                a = A
                for _ in range(50):
                    pass
                b = B
                if a != b:
                    torn[i] += 1
                progress[i].set()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often so a broken pause would tear
    try:
        for i in range(n_workers):
            threads.start(lambda i=i: work(i), name=f"torn-{i}")
        for ev in started:
            assert ev.wait(T)
        for cycle in range(cycles):
            with safepoints.pause(timeout=T) as info:
                assert info.workers == n_workers
                for ev in progress:
                    ev.clear()  # nobody runs now, so any later set() is post-pause progress
                A += 1
                for _ in range(200):
                    pass
                B += 1
            for i, ev in enumerate(progress):
                assert ev.wait(T), f"worker {i} made no progress after cycle {cycle}"
        threads.join()  # re-raises any worker exception
    finally:
        sys.setswitchinterval(old_interval)
    assert torn == [0] * n_workers
    assert A == B
