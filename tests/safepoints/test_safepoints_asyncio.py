"""safepoints with asyncio: an event-loop thread parks between callbacks.

Same rules as test_safepoints.py: gates with timeouts, bounded polls of
``safepoints.statistics()`` where no event exists, every thread joined and
no worker left registered.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import safepoints
from safepoints import PauseTimeout

T = 10.0
HERE = os.path.basename(__file__)


@pytest.fixture(autouse=True)
def _no_workers_left_behind() -> Iterator[None]:
    assert safepoints.statistics().workers == ()
    yield
    stats = safepoints.statistics()
    assert stats.workers == (), f"test left workers registered: {stats.workers}"
    assert not stats.pause_pending


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        tick.wait(0.001)


def state_of(name: str) -> str | None:
    for w in safepoints.statistics().workers:
        if w.name == name:
            return w.state
    return None


class LoopThread:
    """An event loop in its own thread, registered with ``asyncio_worker``."""

    def __init__(self, name: str = "loop") -> None:
        self.name = name
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.errors: list[BaseException] = []
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name=f"{name}-thread", daemon=True)
        self.thread.start()
        assert self.ready.wait(T), "event loop did not start"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self.errors.append(e)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with safepoints.asyncio_worker(name=self.name):
            self.ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[], object]) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        if self.loop is not None and self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(T)
        assert not self.thread.is_alive(), "event loop thread did not stop"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


def test_idle_loop_parks_promptly(loop_thread: LoopThread) -> None:
    assert state_of("loop") == "running"  # blocked in select(): woken by the pause
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 1
        assert state_of("loop") == "parked"
    assert info.acquire_seconds < T / 2
    # the loop still works afterwards
    done = threading.Event()
    loop_thread.call(done.set)
    assert done.wait(T)


def test_loop_parks_between_callbacks(loop_thread: LoopThread) -> None:
    lt = loop_thread
    ticks = [0]
    ticking = [True]
    first_tick = threading.Event()
    in_callback = threading.Event()
    release = threading.Event()
    callback_done = threading.Event()
    ran_during_pause = threading.Event()
    facts: dict[str, object] = {}

    def tick() -> None:  # keeps the loop busy with a stream of callbacks
        ticks[0] += 1
        first_tick.set()
        if ticking[0]:
            asyncio.get_running_loop().call_soon(tick)

    def long_callback() -> None:  # running when the pause starts
        in_callback.set()
        release.wait(T)
        callback_done.set()

    lt.call(tick)
    assert first_tick.wait(T)
    lt.call(long_callback)
    assert in_callback.wait(T)

    def pauser() -> None:
        with safepoints.pause(timeout=T):
            facts["callback_finished_first"] = callback_done.is_set()
            facts["state"] = state_of("loop")
            before = ticks[0]
            lt.call(ran_during_pause.set)
            facts["callback_ran_during_pause"] = ran_during_pause.wait(0.05)
            facts["ticks_during_pause"] = ticks[0] - before

    p = threading.Thread(target=pauser, name="pauser")
    p.start()
    try:
        wait_until(lambda: safepoints.current_pause_holder() is not None, "the pause starts")
        release.set()
    finally:
        release.set()
        p.join(T)
    assert not p.is_alive()
    assert facts == {
        "callback_finished_first": True,
        "state": "parked",
        "callback_ran_during_pause": False,
        "ticks_during_pause": 0,
    }
    assert ran_during_pause.wait(T)  # runs once the pause is over
    count = ticks[0]
    wait_until(lambda: ticks[0] > count, "the loop runs callbacks again")
    ticking[0] = False


def test_blocked_callback_makes_pause_time_out_naming_the_loop(loop_thread: LoopThread) -> None:
    in_callback = threading.Event()
    release = threading.Event()
    line: dict[str, int] = {}

    def stuck_callback() -> None:
        in_callback.set()
        line["n"] = sys._getframe().f_lineno + 1
        release.wait(T)

    loop_thread.call(stuck_callback)
    assert in_callback.wait(T)
    try:
        with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.1):
            pass
    finally:
        release.set()
    late = ei.value.late
    assert [w.name for w in late] == ["loop"]
    assert late[0].thread_id == loop_thread.thread.ident
    message = str(ei.value)
    assert "'loop'" in message
    # where: the innermost frame (inside threading's Event.wait); the message
    # also names the first frame outside the standard library: the callback
    assert late[0].where is not None and "in Condition.wait" in late[0].where
    assert re.search(rf"called from .*{re.escape(HERE)}:{line['n']} in .*stuck_callback", message)
    # the loop keeps working afterwards, and a new pause succeeds
    done = threading.Event()
    loop_thread.call(done.set)
    assert done.wait(T)
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 1


def test_coroutine_checkpoint_parks_the_loop(loop_thread: LoopThread) -> None:
    started = threading.Event()
    steps = [0]
    stop = [False]

    async def busy_task() -> None:
        started.set()
        while not stop[0]:
            safepoints.checkpoint()  # parks the whole loop thread
            steps[0] += 1
            await asyncio.sleep(0)

    assert loop_thread.loop is not None
    fut = asyncio.run_coroutine_threadsafe(busy_task(), loop_thread.loop)
    assert started.wait(T)
    with safepoints.pause(timeout=T):
        before = steps[0]
        assert state_of("loop") == "parked"
        assert not threading.Event().wait(0.02)
        assert steps[0] == before
    stop[0] = True
    fut.result(T)


def test_asyncio_worker_in_main_thread_nesting_and_validation() -> None:
    async def main() -> list[object]:
        seen: list[object] = []
        other = asyncio.new_event_loop()
        try:
            with pytest.raises(ValueError):
                async with safepoints.asyncio_worker(loop=other):
                    pass
        finally:
            other.close()
        with safepoints.worker("outer"):
            async with safepoints.asyncio_worker(asyncio.get_running_loop(), name="inner"):
                seen.append([w.name for w in safepoints.statistics().workers])
                # a pause from the loop thread itself: the loop is the holder
                with safepoints.pause(timeout=T) as info:
                    seen.append(info.workers)
                    await asyncio.sleep(0)  # the loop keeps running for its holder
            seen.append([w.name for w in safepoints.statistics().workers])
        seen.append(safepoints.statistics().workers)
        return seen

    assert asyncio.run(main()) == [["outer"], 0, ["outer"], ()]


def test_registering_a_loop_during_a_pause_parks_it() -> None:
    lt: list[LoopThread] = []
    with safepoints.pause(timeout=T):
        starter = threading.Thread(target=lambda: lt.append(LoopThread("late-loop")))
        starter.start()
        wait_until(lambda: state_of("late-loop") == "parked", "the new loop parked")
    starter.join(T)
    assert not starter.is_alive() and len(lt) == 1
    lt[0].close()
