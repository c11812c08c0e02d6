"""The short switch interval while hotfix computes: set once, restored once, never over someone else's."""

from __future__ import annotations

import sys
import threading

import pytest

from hotfix import _latency
from hotfix._latency import RESPONSIVE_INTERVAL, responsive


@pytest.fixture(autouse=True)
def default_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_lowered_inside_and_restored_after():
    with responsive():
        assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_nested_blocks_restore_only_at_the_outermost_exit():
    with responsive():
        with responsive():
            pass
        assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_restored_when_the_block_raises():
    with pytest.raises(KeyError), responsive():
        raise KeyError("x")
    assert sys.getswitchinterval() == pytest.approx(0.005)
    assert _latency._depth == 0


def test_a_value_set_by_someone_else_meanwhile_wins():
    with responsive():
        sys.setswitchinterval(0.002)
    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_an_interval_already_shorter_is_left_alone():
    sys.setswitchinterval(0.0001)
    with responsive():
        assert sys.getswitchinterval() == pytest.approx(0.0001)
    assert sys.getswitchinterval() == pytest.approx(0.0001)


def test_overlapping_blocks_in_two_threads_share_one_lowering():
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        with responsive():
            entered.set()
            release.wait(30)
        done.set()

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(30)
    with responsive():
        release.set()  # the other thread leaves first: the interval must stay low for us
        assert done.wait(30)
        assert sys.getswitchinterval() == pytest.approx(RESPONSIVE_INTERVAL)
    t.join(30)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_dry_run_and_apply_restore_the_interval(modules):
    mod = modules.create("def f():\n    return 1\n")
    modules.write(mod, "def f():\n    return 2\n")
    import hotfix

    hotfix.dry_run(mod)
    hotfix.apply(mod, probation=0)
    assert mod.f() == 2
    assert sys.getswitchinterval() == pytest.approx(0.005)
