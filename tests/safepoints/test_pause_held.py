"""``PauseInfo.held``: which registered workers a pause held, and how (parked, idle, waited, arrived)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import safepoints
from safepoints import HeldWorker

T = 10.0  # generous bound for every gate: only reached when something is broken


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + T
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        tick.wait(0.001)


def state_of(name: str) -> str | None:
    return next((w.state for w in safepoints.statistics().workers if w.name == name), None)


@pytest.fixture
def started() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for t in threads:
        t.join(T)
    assert not [t.name for t in threads if t.is_alive()]
    assert safepoints.statistics().workers == ()


def start(threads: list[threading.Thread], fn: Callable[[], None], name: str) -> None:
    t = threading.Thread(target=fn, name=name, daemon=True)
    threads.append(t)
    t.start()


def test_held_names_each_worker_and_how_it_was_held(started: list[threading.Thread]) -> None:
    stop = threading.Event()
    jobs: queue.Queue[str] = queue.Queue()
    ready = {name: threading.Event() for name in ("looper", "idler", "unit")}
    leave_unit = threading.Event()

    def looper() -> None:  # a long-lived worker between checkpoints: the pause waits for its next one
        with safepoints.worker("looper"):
            ready["looper"].set()
            while not stop.is_set():
                safepoints.checkpoint()

    def idler() -> None:  # a long-lived worker blocked in idle()
        with safepoints.worker("idler"), safepoints.idle():
            ready["idler"].set()
            jobs.get(timeout=T)

    def unit_in_flight() -> None:  # one unit of work running when the pause is requested
        with safepoints.worker("request-1", unit=True), safepoints.critical():
            ready["unit"].set()
            assert leave_unit.wait(T)

    def arriving_unit() -> None:  # a unit that starts during the pause: parks on entry
        with safepoints.worker("request-2", unit=True):
            pass

    start(started, looper, "looper")
    start(started, idler, "idler")
    start(started, unit_in_flight, "unit")
    for event in ready.values():
        assert event.wait(T)
    wait_until(lambda: state_of("idler") == "idle", "the idler is idle")

    def request_then_release_unit() -> None:
        wait_until(lambda: safepoints.current_pause_holder() is not None, "the pause is requested")
        leave_unit.set()

    start(started, request_then_release_unit, "releaser")
    with safepoints.pause(timeout=T) as info:
        inside = {h.name: h for h in info.held}
        start(started, arriving_unit, "arriving")
        wait_until(lambda: state_of("request-2") == "parked", "the arriving unit parked")
    stop.set()
    jobs.put("done")

    assert info.workers == 3
    assert inside == {
        "looper": HeldWorker("looper", inside["looper"].thread_id, "waited", unit=False),
        "idler": HeldWorker("idler", inside["idler"].thread_id, "idle", unit=False),
        "request-1": HeldWorker("request-1", inside["request-1"].thread_id, "waited", unit=True),
    }
    after = {h.name: h for h in info.held}
    assert set(after) == {"looper", "idler", "request-1", "request-2"}
    assert (after["request-2"].how, after["request-2"].unit) == ("arrived", True)
    assert info.stall_seconds is not None


def test_nested_registration_keeps_the_outer_kind(started: list[threading.Thread]) -> None:
    ready = threading.Event()
    leave = threading.Event()

    def worker_running_a_unit() -> None:  # a long-lived worker that runs a unit: still a worker
        with safepoints.worker("consumer"), safepoints.worker("job", unit=True):
            ready.set()
            with safepoints.idle():
                assert leave.wait(T)

    start(started, worker_running_a_unit, "consumer")
    assert ready.wait(T)
    wait_until(lambda: state_of("consumer") == "idle", "the consumer is idle")
    with safepoints.pause(timeout=T) as info:
        pass
    leave.set()
    assert [(h.name, h.how, h.unit) for h in info.held] == [("consumer", "idle", False)]


def test_a_pause_with_no_workers_holds_nobody() -> None:
    with safepoints.pause(timeout=T) as info:
        assert info.held == ()
    assert info.held == ()
    assert info.workers == 0


def test_async_units_in_flight_and_held_are_counted() -> None:
    """A loop registered only by its async units: one in flight (waited for), one started during the pause."""
    import asyncio

    ready = threading.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []

    def run_loop() -> None:
        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(asyncio.Event())
            ready.set()
            await stop_box[0].wait()

        asyncio.run(main())

    loop_thread = threading.Thread(target=run_loop, name="bare-loop", daemon=True)
    loop_thread.start()
    assert ready.wait(T)
    loop = loop_box[0]
    entered = {1: threading.Event(), 2: threading.Event()}
    started_second = threading.Event()
    gate: list[asyncio.Event] = []

    async def request(n: int) -> None:
        if n == 2:
            started_second.set()
        async with safepoints.async_critical("requests"):
            entered[n].set()
            if n == 1:
                await gate[0].wait()

    def make_gate() -> None:
        gate.append(asyncio.Event())

    loop.call_soon_threadsafe(make_gate)
    first = asyncio.run_coroutine_threadsafe(request(1), loop)
    assert entered[1].wait(T)
    acquired, release = threading.Event(), threading.Event()
    box: list[safepoints.PauseInfo] = []

    def pauser() -> None:
        with safepoints.pause(timeout=T) as info:
            box.append(info)
            acquired.set()
            assert release.wait(T)

    pausing = threading.Thread(target=pauser, name="pauser")
    pausing.start()
    try:
        wait_until(lambda: safepoints.statistics().pause_pending, "the pause is requested")
        second = asyncio.run_coroutine_threadsafe(request(2), loop)
        assert started_second.wait(T)
        loop.call_soon_threadsafe(gate[0].set)
        assert acquired.wait(T)
        first.result(T)
        assert not entered[2].is_set()
    finally:
        release.set()
        pausing.join(T)
    second.result(T)
    loop.call_soon_threadsafe(stop_box[0].set)
    loop_thread.join(T)
    [info] = box
    # its only registration ended with the unit: one entry per async unit, on the loop's thread
    assert sorted((h.how, h.unit, h.thread_id) for h in info.held) == [
        ("arrived", True, loop_thread.ident), ("waited", True, loop_thread.ident)]
