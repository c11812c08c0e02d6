"""``Patch.hold``: registered workers and units of work held, unregistered threads only waited for.

"workers held" must be exactly true: a patch that held nobody says so, and
threads that were running replaced code (not registered, so never stopped)
are reported as waited for, with where they were and for how long.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import hotfix
import hotfix.admin
import safepoints
from hotfix import _events, _transaction
from hotfix._cli import main
from hotfix._records import Hold, WaitedThread
from hotfix._rollout import ProcessResult, fleet_hold
from hotfix.integrations import UnitOfWork

WAIT = 30.0
TOKEN = "hold-token-" + "h" * 24
V1 = "def value():\n    return 1\n\n\ndef slow(gate, inside):\n    inside.set()\n    gate.wait(30)\n    return 1\n"
V2 = V1.replace("return 1", "return 2")


def wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}: {safepoints.statistics()}")
        tick.wait(0.001)


def state_of(prefix: str) -> str | None:
    return next((w.state for w in safepoints.statistics().workers if w.name.startswith(prefix)), None)


class Threads:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[[], object], name: str) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # re-raised by join
                self.errors.append(exc)

        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(WAIT)
        assert not [t.name for t in self.threads if t.is_alive()]
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def threads() -> Iterator[Threads]:
    ts = Threads()
    try:
        yield ts
    finally:
        ts.join()


def consumers(threads: Threads, module, *names: str) -> None:
    """Registered workers calling the module between checkpoints; each has run once on return."""
    ran = [threading.Event() for _ in names]

    def run(name: str, done: threading.Event) -> None:
        with safepoints.worker(name):
            while not threads.stop.is_set():
                safepoints.checkpoint()
                module.value()
                done.set()

    for name, done in zip(names, ran, strict=True):
        threads.start(lambda n=name, d=done: run(n, d), name)
    for done in ran:
        assert done.wait(WAIT)


@pytest.fixture
def first_sighting(monkeypatch) -> threading.Event:
    """Set when the consistency wait first sees an unregistered thread in the replaced code."""
    seen = threading.Event()
    original = _transaction._thread_name

    def name_then_signal(tid: int) -> str:
        name = original(tid)
        seen.set()
        return name

    monkeypatch.setattr(_transaction, "_thread_name", name_then_signal)
    return seen


def busy_unregistered(threads: Threads, module, seen: threading.Event) -> threading.Event:
    """An unregistered thread inside ``slow`` until the apply has seen it there; returns ``inside``."""
    gate, inside = threading.Event(), threading.Event()
    threads.start(lambda: module.slow(gate, inside), "busy-unregistered")
    threads.start(lambda: gate.set() if seen.wait(WAIT) else None, "releaser")
    assert inside.wait(WAIT)
    return inside


def test_registered_workers_are_held_by_name(modules, threads):
    m = modules.create(V1)
    consumers(threads, m, "consumer-1", "consumer-2")
    modules.write(m, V2)
    patch = hotfix.apply(m, probation=0, timeout=WAIT)
    hold = patch.hold
    assert sorted(hold.workers) == ["consumer-1", "consumer-2"]
    assert (hold.units, hold.units_in_flight, hold.waited, hold.wait_seconds) == (0, 0, (), 0.0)
    assert hold.seconds == patch.stall_seconds > 0
    assert str(hold).startswith("held 2 registered workers (consumer-")
    assert patch.to_dict()["hold"]["workers"] == list(hold.workers)


def test_units_of_work_in_flight_and_arriving_are_held(modules, threads):
    m = modules.create(V1)
    modules.write(m, V2)
    in_unit, leave = threading.Event(), threading.Event()
    arrived = threading.Event()

    def request_in_flight() -> None:
        with UnitOfWork("request"):
            m.value()
            in_unit.set()
            assert leave.wait(WAIT)

    def request_arriving() -> None:
        with UnitOfWork("request"):
            arrived.set()

    def during_swap(event: _events.StepEvent) -> None:  # under the pause: a new request must wait for it
        if (event.kind, event.step, event.phase) == ("apply", "swap", "enter"):
            threads.start(request_arriving, "arriving")
            wait_until(lambda: state_of("request (arriving)") == "parked", "the arriving request parked")

    threads.start(request_in_flight, "in-flight")
    assert in_unit.wait(WAIT)
    threads.start(lambda: wait_until(lambda: safepoints.current_pause_holder() is not None, "the pause is requested")
                  or leave.set(), "releaser")
    unsubscribe = _events.subscribe(during_swap)
    try:
        patch = hotfix.apply(m, probation=0, timeout=WAIT)
    finally:
        unsubscribe()
    assert arrived.wait(WAIT)
    hold = patch.hold
    assert (hold.workers, hold.units, hold.units_in_flight, hold.waited) == ((), 2, 1, ())
    assert str(hold).startswith("held 2 units of work (1 in flight) for ")


def test_unregistered_thread_is_waited_for_not_held(modules, threads, first_sighting, tmp_path, caplog):
    m = modules.create(V1)
    modules.write(m, V2)
    audit = tmp_path / "audit.jsonl"
    hotfix.configure(audit_log=str(audit))
    try:
        busy_unregistered(threads, m, first_sighting)
        with caplog.at_level(logging.INFO, logger="hotfix"):
            patch = hotfix.apply(m, probation=0, timeout=WAIT)
    finally:
        hotfix.configure(audit_log=None)
    hold = patch.hold
    assert not hold.held_anything and (hold.workers, hold.units) == ((), 0)
    [waited] = hold.waited
    assert waited.name == "busy-unregistered" and waited.where.endswith(" in slow") and waited.seconds > 0
    assert hold.wait_seconds >= waited.seconds and hold.seconds >= hold.wait_seconds
    text = str(hold)
    assert text.startswith("no registered workers or units of work") and "workers held" not in text
    assert "waited" in text and "1 unregistered thread " in text and "busy-unregistered at " in text
    assert text in caplog.text  # the log line of the resume step
    swapped = [json.loads(line) for line in audit.read_text().splitlines() if '"swapped"' in line]
    assert [r["hold"]["waited"][0]["name"] for r in swapped] == ["busy-unregistered"]
    assert swapped[0]["hold"]["workers"] == [] and swapped[0]["stall_seconds"] == patch.stall_seconds


def test_hold_round_trips_through_json():
    hold = Hold(("consumer-1",), 3, 1, 0.002, (WaitedThread("t", "a.py:3 in f", 0.5),), 0.5)
    assert Hold.from_dict(json.loads(json.dumps(hold.to_dict()))) == hold


@pytest.fixture
def endpoint(modules, monkeypatch):
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    monkeypatch.setenv("HOTFIX_URL", server.url)
    monkeypatch.setenv("HOTFIX_TOKEN", TOKEN)
    yield server
    server.close()


def test_cli_says_who_was_held(endpoint, modules, threads, capsys):
    m = modules.create(V1)
    consumers(threads, m, "consumer-1")
    modules.write(m, V2)
    assert main(["apply", m.__name__, "--probation", "0"]) == 0
    out = capsys.readouterr().out
    assert f"{m.__name__}: APPLIED as " in out and "(held 1 registered worker (consumer-1) for " in out
    hotfix.rollback()
    assert main(["apply", m.__name__, "--probation", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    patch = doc["result"]["patch"]
    hold = patch["hold"]
    assert (hold["workers"], hold["units"], hold["units_in_flight"], hold["waited"]) == (["consumer-1"], 0, 0, [])
    assert hold["seconds"] == patch["stall_seconds"]


def test_cli_never_says_workers_held_when_it_only_waited(endpoint, modules, threads, first_sighting, capsys):
    m = modules.create(V1)
    modules.write(m, V2)
    busy_unregistered(threads, m, first_sighting)
    assert main(["apply", m.__name__, "--probation", "0", "--timeout", str(WAIT)]) == 0
    out = capsys.readouterr().out
    assert "workers held" not in out and "no registered workers or units of work" in out
    assert "waited " in out and "for 1 unregistered thread to leave the replaced code (busy-unregistered at " in out


def test_rollout_summary_adds_up_the_processes():
    held = Hold((), 4, 1, 0.0031, (), 0.0)
    waited = Hold((), 0, 0, 0.8, (WaitedThread("t1", "a.py:3 in f", 0.7), WaitedThread("t2", "a.py:3 in f", 0.2)), 0.7)
    procs = [ProcessResult(1, "s1", outcome="applied", hold=held.to_dict()),
             ProcessResult(2, "s2", outcome="applied", hold=waited.to_dict())]
    assert fleet_hold(procs) == ("held 4 unit(s) of work, at most 0.800000s in one process; waited for 2 unregistered"
                                 " thread(s) in 1 process(es), at most 0.700s")
    assert fleet_hold(procs[1:]).startswith("no registered workers or units of work held (paused at most 0.800000s)")
    assert fleet_hold([ProcessResult(3, "s3", outcome="applied")]) == "hold not reported"
