"""safepoints with asyncio: an event-loop thread parks between callbacks.

Same rules as test_safepoints.py: gates with timeouts, bounded polls of
``safepoints.statistics()`` where no event exists, every thread joined and
no worker left registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

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
    """An event loop in its own thread, registered with ``asyncio_worker`` unless ``register=False``."""

    def __init__(self, name: str = "loop", register: bool = True) -> None:
        self.name = name
        self.register = register
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
        if not self.register:
            self.ready.set()
            await self._stop.wait()
            return
        async with safepoints.asyncio_worker(name=self.name):
            self.ready.set()
            await self._stop.wait()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

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


# --------------------------------------------------------------------------- async units of work

#: What the "patch" swaps: units read it twice with an await in between and must see one value.
code = {"version": 1}


@pytest.fixture
def version() -> Iterator[dict[str, int]]:
    code["version"] = 1
    yield code
    code["version"] = 1


class Request:
    """A coroutine shaped like a request: read the version, await a gate, read it again."""

    def __init__(self, lt: LoopThread, name: str | None = None) -> None:
        self.lt = lt
        self.name = name
        self.started = threading.Event()  # the coroutine runs, about to enter its unit
        self.entered = threading.Event()  # inside the unit, first read done
        self.gate = asyncio.Event()  # set on the loop: the unit may finish
        self.seen: list[int] = []
        self.future = lt.submit(self._run())

    async def _run(self) -> list[int]:
        self.started.set()
        async with safepoints.async_critical(self.name):
            self.seen.append(code["version"])
            self.entered.set()
            await self.gate.wait()
            await asyncio.sleep(0)
            self.seen.append(code["version"])
        return self.seen

    def finish(self) -> None:
        self.lt.call(self.gate.set)

    def result(self) -> list[int]:
        return self.future.result(T)


def loop_runs_callbacks(lt: LoopThread) -> bool:
    """True if the loop runs a callback now (it is not parked)."""
    ran = threading.Event()
    lt.call(ran.set)
    return ran.wait(T)


class Pauser:
    """A thread that takes a pause, swaps the version, and holds it until ``release``."""

    def __init__(self, timeout: float = T, swap_to: int = 2) -> None:
        self.acquired = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.info: safepoints.PauseInfo | None = None
        self.error: BaseException | None = None
        self.during: dict[str, object] = {}
        self._timeout = timeout
        self._swap_to = swap_to
        self.thread = threading.Thread(target=self._run, name="pauser")
        self.thread.start()

    def _run(self) -> None:
        try:
            with safepoints.pause(timeout=self._timeout) as info:
                self.info = info
                code["version"] = self._swap_to
                self.during["stats"] = safepoints.statistics()
                self.acquired.set()
                assert self.release.wait(T)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def join(self) -> None:
        self.release.set()
        self.thread.join(T)
        assert not self.thread.is_alive()


def wait_pending() -> None:
    wait_until(lambda: safepoints.statistics().pause_pending, "the pause is requested")


def test_pause_waits_for_an_in_flight_unit_and_holds_new_ones(loop_thread: LoopThread, version: dict) -> None:
    lt = loop_thread
    first = Request(lt)
    assert first.entered.wait(T)
    assert state_of("loop") == "critical"
    [w] = safepoints.statistics().workers
    assert w.units == 1 and w.loop is not None

    pauser = Pauser()
    try:
        wait_pending()
        # the unit is in flight: the loop keeps running callbacks, the pause waits
        assert loop_runs_callbacks(lt)
        assert not pauser.acquired.is_set()
        # a unit that starts now is held: its coroutine runs, but it does not enter
        second = Request(lt)
        assert second.started.wait(T)
        assert loop_runs_callbacks(lt)
        assert not second.entered.is_set()
        first.finish()
        assert pauser.acquired.wait(T)
        # the loop ran its last unit out and parked between callbacks (before the callback
        # that resolves first.future: that one waits for the pause to end)
        assert first.seen == [1, 1]  # all old
        assert state_of("loop") == "parked"
        assert not second.entered.is_set()
    finally:
        pauser.join()
    assert pauser.error is None and pauser.info is not None and pauser.info.workers == 1
    assert first.result() == [1, 1]
    # the report: the loop (a long-lived worker), the unit it waited for, the unit it held on entry
    ident = lt.thread.ident
    assert sorted((h.name, h.thread_id, h.how, h.unit) for h in pauser.info.held) == [
        ("loop", ident, "arrived", True), ("loop", ident, "waited", False), ("loop", ident, "waited", True)]
    assert second.entered.wait(T)
    second.finish()
    assert second.result() == [2, 2]  # all new
    wait_until(lambda: state_of("loop") == "running", "the loop's units are over")


def test_units_on_an_unregistered_loop(version: dict) -> None:
    lt = LoopThread("bare", register=False)
    try:
        assert safepoints.statistics().workers == ()
        first = Request(lt, name="requests")
        assert first.entered.wait(T)
        assert [(w.name, w.units, w.state) for w in safepoints.statistics().workers] == [("requests", 1, "critical")]
        pauser = Pauser()
        wait_pending()
        second = Request(lt, name="requests")
        assert second.started.wait(T)
        assert loop_runs_callbacks(lt)
        first.finish()
        assert first.result() == [1, 1]
        assert pauser.acquired.wait(T)
        # its units were the loop's only registration: it left, it does not park and keeps running
        assert pauser.during["stats"].workers == ()  # type: ignore[attr-defined]
        assert loop_runs_callbacks(lt)
        assert not second.entered.is_set()
        pauser.join()
        assert pauser.error is None
        assert second.entered.wait(T)
        second.finish()
        assert second.result() == [2, 2]
    finally:
        lt.close()


def test_timeout_names_the_loop_and_its_units_and_releases_everything(loop_thread: LoopThread, version: dict) -> None:
    lt = loop_thread
    stuck = [Request(lt), Request(lt)]
    for r in stuck:
        assert r.entered.wait(T)
    late_unit: list[Request] = []

    def start_late_unit() -> None:  # while the pause waits: held
        wait_pending()
        late_unit.append(Request(lt))

    timer_thread = threading.Thread(target=start_late_unit)
    timer_thread.start()
    before = safepoints.statistics().pause_timeouts
    with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.5):
        pass
    timer_thread.join(T)
    [late] = ei.value.late
    assert (late.name, late.state, late.units, late.thread_id) == ("loop", "critical", 2, lt.thread.ident)
    assert late.loop == f"{type(lt.loop).__name__} 0x{id(lt.loop):x}"
    assert "2 async unit(s) of work in flight" in str(ei.value)
    # nothing is left parked or awaiting: the held unit starts, in the old code (nothing was swapped)
    stats = safepoints.statistics()
    assert not stats.pause_pending and stats.parked == 0 and stats.pause_timeouts == before + 1
    assert late_unit and late_unit[0].entered.wait(T)
    for r in [*stuck, *late_unit]:
        r.finish()
        assert r.result() == [1, 1]
    assert state_of("loop") == "running"


def test_a_held_unit_cancelled_leaves_nothing(version: dict) -> None:
    lt = LoopThread("bare", register=False)
    try:
        with safepoints.pause(timeout=T):  # no workers: acquired at once; the loop keeps running
            held = Request(lt, name="held")
            assert held.started.wait(T)
            assert loop_runs_callbacks(lt)  # its coroutine has run up to the hold and awaits
            assert not held.entered.is_set()
            held.future.cancel()
            with pytest.raises(concurrent.futures.CancelledError):
                held.future.result(T)
            assert safepoints.statistics().workers == ()
        assert not held.entered.is_set()
        again = Request(lt, name="again")
        assert again.entered.wait(T)
        again.finish()
        assert again.result() == [1, 1]
    finally:
        lt.close()


def test_nested_units_and_child_tasks_count_once_and_are_never_held(loop_thread: LoopThread, version: dict) -> None:
    lt = loop_thread
    inside = threading.Event()
    go_on = asyncio.Event()
    facts: dict[str, object] = {}

    async def child() -> int:
        async with safepoints.async_critical():  # inherits the parent's unit: not held
            await asyncio.sleep(0)
            return code["version"]

    async def request() -> list[int]:
        seen = []
        async with safepoints.async_critical():
            seen.append(code["version"])
            async with safepoints.async_critical():
                facts["units"] = [w.units for w in safepoints.statistics().workers]
            inside.set()
            await go_on.wait()
            # a pause is pending now: nested units and child tasks still run
            async with safepoints.async_critical():
                seen.append(code["version"])
            seen.extend(await asyncio.gather(child(), child()))
        return seen

    fut = lt.submit(request())
    assert inside.wait(T)
    assert facts["units"] == [1]
    pauser = Pauser()
    try:
        wait_pending()
        lt.call(go_on.set)
        assert pauser.acquired.wait(T)
    finally:
        pauser.join()
    assert pauser.error is None
    assert fut.result(T) == [1, 1, 1, 1]


def test_units_on_several_loops(version: dict) -> None:
    loops = [LoopThread("loop-a"), LoopThread("loop-b", register=False)]
    try:
        requests = [Request(lt) for lt in loops]
        for r in requests:
            assert r.entered.wait(T)
        with pytest.raises(PauseTimeout) as ei, safepoints.pause(timeout=0.2):
            pass
        assert sorted((w.name, w.units) for w in ei.value.late) == [("loop-a", 1), ("loop-b-thread", 1)]
        pauser = Pauser()
        wait_pending()
        requests[0].finish()
        wait_until(lambda: state_of("loop-a") == "parked", "the first loop parks")
        assert requests[0].seen == [1, 1]
        assert not pauser.acquired.is_set()
        assert loop_runs_callbacks(loops[1])  # the second still runs its unit out
        requests[1].finish()
        assert requests[1].result() == [1, 1]
        assert pauser.acquired.wait(T)
        pauser.join()
        assert pauser.error is None and pauser.info is not None and pauser.info.workers == 1
    finally:
        for lt in loops:
            lt.close()


def test_a_pause_from_inside_a_unit_does_not_wait_for_it(loop_thread: LoopThread, version: dict) -> None:
    lt = loop_thread
    facts: dict[str, object] = {}

    def swap_in_a_thread() -> int:  # runs in the unit's context (asyncio.to_thread copies it)
        with safepoints.pause(timeout=T) as info:
            code["version"] = 2
            facts["state during"] = state_of("loop")
            return info.workers

    async def admin_request() -> list[object]:
        async with safepoints.async_critical():
            before = code["version"]
            held = await asyncio.to_thread(swap_in_a_thread)
            facts["units after"] = [w.units for w in safepoints.statistics().workers]
            return [before, held, code["version"]]

    assert lt.submit(admin_request()).result(T) == [1, 1, 2]
    assert facts == {"state during": "parked", "units after": [1]}

    async def swap_on_the_loop_thread() -> int:  # the loop cannot run meanwhile: nothing to wait for
        async with safepoints.async_critical():
            with safepoints.pause(timeout=T) as info:
                code["version"] = 3
                return info.workers

    assert lt.submit(swap_on_the_loop_thread()).result(T) == 0
    assert state_of("loop") == "running"


def test_a_loop_closed_with_units_in_flight_is_forgotten() -> None:
    entered = threading.Event()
    kept: list[object] = []

    def run() -> None:
        loop = asyncio.new_event_loop()

        async def never_ends() -> None:
            async with safepoints.async_critical(name="closed"):
                entered.set()
                await asyncio.Event().wait()

        kept.append(loop.create_task(never_ends()))
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()  # the task is still pending, inside its unit

    t = threading.Thread(target=run)
    t.start()
    t.join(T)
    assert entered.is_set()
    keep_thread_alive = threading.Event()
    # the thread that ran it is gone too; a closed loop in a live thread is dropped as well:
    def close_then_live_on() -> None:
        _close_with_unit_in_flight(kept)
        keep_thread_alive.wait(T)

    alive = threading.Thread(target=close_then_live_on)
    alive.start()
    try:
        wait_until(lambda: len(kept) == 3, "the second loop closed")
        with safepoints.pause(timeout=T) as info:
            assert info.workers == 0
        assert safepoints.statistics().workers == ()
    finally:
        keep_thread_alive.set()
        alive.join(T)
    kept.clear()
    gc.collect()  # closing the abandoned coroutines runs their unit exits: harmless
    assert safepoints.statistics().workers == ()


def _close_with_unit_in_flight(kept: list[object]) -> None:
    loop = asyncio.new_event_loop()

    async def never_ends() -> None:
        async with safepoints.async_critical(name="closed-live"):
            await asyncio.Event().wait()

    task = loop.create_task(never_ends())
    loop.run_until_complete(asyncio.sleep(0.01))
    kept.append(task)
    assert [w.units for w in safepoints.statistics().workers if w.name == "closed-live"] == [1]
    loop.close()
    kept.append(loop)


def test_with_asyncio_worker_around_run_forever() -> None:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    with pytest.raises(TypeError):
        with safepoints.asyncio_worker():
            pass

    def run() -> None:
        with safepoints.asyncio_worker(loop, name="manual"):
            loop.call_soon(started.set)
            loop.run_forever()

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(T)
        with pytest.raises(ValueError):
            with safepoints.asyncio_worker(loop):
                pass
        with safepoints.pause(timeout=T) as info:
            assert info.workers == 1 and state_of("manual") == "parked"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(T)
        loop.close()
    assert not t.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_unit_keeps_it_in_the_child() -> None:
    async def main() -> int:
        async with safepoints.async_critical(name="forking"):
            pid = os.fork()
            if pid == 0:  # the child: its loop thread and unit survived, nothing is pending
                try:
                    [w] = safepoints.statistics().workers
                    ok = (w.name, w.units, safepoints.statistics().pause_pending) == ("forking", 1, False)
                    async with safepoints.async_critical():  # nested: fine
                        pass
                finally:
                    os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytest-xdist threads: fork is fine here
        assert asyncio.run(main()) == 0
