"""The hand-over after a pause: the releasing thread lets the threads it parked run first.

``safepoints._core._sleep`` is replaced by a recorder, so the tests check the
decision (slept or not, for how long per resumed thread) and never timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import safepoints
from safepoints import _core

T = 10.0


@pytest.fixture
def slept(monkeypatch) -> list[tuple[float, int | None]]:
    calls: list[tuple[float, int | None]] = []
    monkeypatch.setattr(_core, "_sleep", lambda s: calls.append((s, safepoints.current_pause_holder())))
    return calls


class Workers:
    """``n`` registered threads that checkpoint in a loop (a pause must park them) until stopped."""

    def __init__(self, n: int, *, idle: bool = False) -> None:
        self.stop = threading.Event()
        self.started = threading.Barrier(n + 1, timeout=T)
        self.threads = [threading.Thread(target=self.run, args=(i, idle), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()
        self.started.wait()

    def run(self, i: int, idle: bool) -> None:
        with safepoints.worker(f"resume-{i}"):
            self.started.wait()
            while not self.stop.is_set():
                if idle:
                    with safepoints.idle():
                        self.stop.wait(T)
                else:
                    safepoints.checkpoint()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(T)
        assert not any(t.is_alive() for t in self.threads)


@pytest.fixture
def workers() -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for w in made:
        w.join()


def test_release_sleeps_once_per_parked_thread_after_the_pause_ended(slept, workers) -> None:
    workers.append(Workers(3))
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 3
        assert all(w.state == "parked" for w in safepoints.statistics().workers)
    assert len(slept) == 1
    seconds, holder = slept[0]
    assert seconds == pytest.approx(3 * _core._HAND_OVER_EACH)
    assert holder is None  # after the release: the parked threads can take the GIL meanwhile


def test_no_hand_over_when_nobody_was_parked(slept, workers) -> None:
    with safepoints.pause(timeout=T):
        pass
    workers.append(Workers(2, idle=True))  # idle workers are held without parking
    with safepoints.pause(timeout=T) as info:
        assert info.workers == 2
    assert slept == []


def test_the_hand_over_is_capped(slept, workers, monkeypatch) -> None:
    monkeypatch.setattr(_core, "_HAND_OVER_MAX", 2 * _core._HAND_OVER_EACH)
    workers.append(Workers(4))
    with safepoints.pause(timeout=T):
        pass
    assert [s for s, _ in slept] == [pytest.approx(2 * _core._HAND_OVER_EACH)]


def test_a_nested_pause_hands_over_only_at_the_outermost_release(slept, workers) -> None:
    workers.append(Workers(2))
    with safepoints.pause(timeout=T):
        with safepoints.pause(timeout=T) as inner:
            assert inner.nested
        assert slept == []
    assert len(slept) == 1
