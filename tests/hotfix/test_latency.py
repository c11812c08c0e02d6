"""Giving way while hotfix computes: where it sleeps, how long, and where it never does.

The clock and the sleep of ``hotfix._latency`` are replaced by recorders, so
nothing here depends on timing: each test checks *decisions* (slept or not,
for how long relative to the work, who held the pause meanwhile).
"""

from __future__ import annotations

import sys
import threading

import pytest

import safepoints
from hotfix import _latency
from hotfix._latency import AWAY, PIECE, responsive
from verification import _chunked


class Clock:
    """A fake ``perf_counter`` advanced by hand, and a ``sleep`` that records (and advances it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.step = 0.0  # added on every read (for code paths we cannot advance by hand)
        self.slept: list[tuple[float, int | None]] = []  # (seconds, pause holder at that moment)
        self.kept_away = 0.0  # how much longer than asked each sleep lasts (others holding the GIL)

    def read(self) -> float:
        self.now += self.step
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append((seconds, safepoints.current_pause_holder()))
        self.now += seconds + self.kept_away


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_latency, "_now", c.read)
    monkeypatch.setattr(_latency, "_sleep", c.sleep)
    return c


@pytest.fixture
def other_thread():
    """A plain thread alive for the test (a service's worker, waiting)."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(60,), name="service-worker", daemon=True)
    t.start()
    yield t
    stop.set()
    t.join(30)


def test_gives_way_once_a_piece_is_done_sleeping_in_proportion(clock, other_thread):
    with responsive():
        clock.now += PIECE / 2
        _chunked.give_way()
        assert clock.slept == []  # half a piece: keep going
        clock.now += PIECE  # now 1.5 pieces since entering
        _chunked.give_way()
        assert [s for s, _ in clock.slept] == [pytest.approx(1.5 * PIECE * AWAY)]
        _chunked.give_way()  # the piece starts again after the sleep
        assert len(clock.slept) == 1
    _chunked.give_way()  # outside the block: no callback any more
    assert len(clock.slept) == 1


def test_after_being_kept_away_whole_switch_intervals_the_next_piece_is_one_interval(clock, other_thread):
    interval = sys.getswitchinterval()
    with responsive():
        clock.kept_away = 1.5 * interval  # one forced switch's worth: still short pieces
        clock.now += PIECE
        _chunked.give_way()
        clock.now += PIECE
        _chunked.give_way()
        assert len(clock.slept) == 2
        clock.slept.clear()
        clock.kept_away = 3 * interval  # the others are computing: they kept the GIL for whole intervals
        clock.now += PIECE
        _chunked.give_way()
        assert len(clock.slept) == 1
        clock.kept_away = 0.0
        clock.now += interval / 2
        _chunked.give_way()
        assert len(clock.slept) == 1  # no give-way within the next switch interval of work
        clock.now += interval / 2 + PIECE
        _chunked.give_way()
        assert len(clock.slept) == 2  # one interval worked: give way again; this time back at once
        clock.now += PIECE
        _chunked.give_way()
        assert len(clock.slept) == 3  # pieces are short again


def test_never_sleeps_while_this_thread_holds_the_pause(clock, other_thread):
    with responsive():
        with safepoints.pause(timeout=30):
            clock.now += 10 * PIECE
            _chunked.give_way()
        assert clock.slept == []
        clock.now += 10 * PIECE
        _chunked.give_way()  # the pause is over: give way again
        assert len(clock.slept) == 1 and clock.slept[0][1] is None


def test_nested_blocks_keep_giving_way_and_restore_the_outer_callback(clock, other_thread):
    with responsive():
        outer = _chunked._local.between
        with responsive():
            assert _chunked._local.between is not outer
        assert _chunked._local.between is outer
    assert getattr(_chunked._local, "between", None) is None


def test_without_other_threads_nothing_is_installed(clock, monkeypatch):
    monkeypatch.setattr(_latency, "_others_alive", lambda: False)
    with responsive():
        assert getattr(_chunked._local, "between", None) is None
        clock.now += 100 * PIECE
        _chunked.give_way()
    assert clock.slept == []


def test_other_threads_are_any_but_this_one_and_hotfix_own(other_thread):
    assert _latency._others_alive()
    # a hotfix-* thread alone does not count: the answer is the same with or without it
    stop = threading.Event()
    own = threading.Thread(target=stop.wait, args=(60,), name="hotfix-probe", daemon=True)
    before = _latency._others_alive()
    own.start()
    try:
        assert _latency._others_alive() == before
    finally:
        stop.set()
        own.join(30)


def test_the_switch_interval_is_left_alone(other_thread):
    before = sys.getswitchinterval()
    with responsive():
        assert sys.getswitchinterval() == before
    assert sys.getswitchinterval() == before


def test_a_verification_reaches_give_way_points_and_an_apply_never_sleeps_under_its_pause(
        modules, clock, other_thread):
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(300))
    mod = modules.create(body + "def target():\n    return 1\n")
    modules.write(mod, body + "def target():\n    return 2\n")
    import hotfix

    clock.step = PIECE  # every reading is a piece later: each give-way point sleeps
    before = sys.getswitchinterval()
    hotfix.apply(mod, probation=0)
    assert mod.target() == 2
    assert len(clock.slept) >= 20  # per definition compared, per code objects rebased, ...
    assert all(holder is None for _, holder in clock.slept)  # never inside the pause
    assert sys.getswitchinterval() == before
    clock.slept.clear()
    modules.write(mod, body + "def target():\n    return 3\n")
    hotfix.dry_run(mod)
    assert len(clock.slept) >= 20


@pytest.mark.skipif(hasattr(sys, "monitoring"), reason="3.12+ watches with sys.monitoring: no twins to compile")
def test_probation_twins_are_compiled_before_the_pause(modules, monkeypatch):
    import hotfix
    from hotfix import _transaction

    compiled_under: list[int | None] = []
    real = _transaction.instrumented_twin

    def recording(*args, **kwargs):
        compiled_under.append(safepoints.current_pause_holder())
        return real(*args, **kwargs)

    monkeypatch.setattr(_transaction, "instrumented_twin", recording)
    mod = modules.create("def f(x):\n    return x + 1\n")
    modules.write(mod, "def f(x):\n    return x + 2\n")
    patch = hotfix.apply(mod, probation=0.01)
    assert mod.f(1) == 3 and patch.status.value == "applied"
    assert compiled_under and all(holder is None for holder in compiled_under)
