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
