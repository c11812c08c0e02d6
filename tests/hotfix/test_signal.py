"""Signal trigger: the handler only wakes a thread, which logs dry runs of stale modules.

pytest-xdist runs each test in the main thread of a worker process, so
``signal.signal`` is allowed; every test restores the handler it replaced.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from hotfix._signal import install_signal_handler, stale_modules

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")

WAIT = 20.0

V1 = """
    def price(qty):
        return qty * 2
"""

V2 = """
    def price(qty):
        return qty * 3
"""


class Scans:
    """on_scan collector: each scan's reports, waited for under a condition."""

    def __init__(self) -> None:
        self.scans: list[list] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, reports: list) -> None:
        with self._cond:
            self.scans.append(list(reports))
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = WAIT) -> list:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.scans) >= count, timeout), self.scans
            return self.scans[count - 1]


@pytest.fixture
def restore_sigusr1():
    previous = signal.getsignal(signal.SIGUSR1)
    yield previous
    signal.signal(signal.SIGUSR1, previous)


def test_signal_reports_the_stale_module_only(modules, caplog, restore_sigusr1):
    caplog.set_level(logging.INFO, logger="hotfix.signal")
    stale = modules.create(V1)
    fresh = modules.create(V1)
    modules.write(stale, V2)
    scans = Scans()
    reported = []
    handle = install_signal_handler(on_scan=scans, on_report=reported.append)
    try:
        assert signal.getsignal(signal.SIGUSR1) == handle._handler
        os.kill(os.getpid(), signal.SIGUSR1)
        reports = scans.wait(1)
    finally:
        handle.uninstall()
    names = {r.module for r in reports}
    assert stale.__name__ in names
    assert fresh.__name__ not in names
    assert all(r.verdict != "unchanged" for r in reports)
    mine = next(r for r in reports if r.module == stale.__name__)
    assert mine.verdict == "safe"
    assert [r.module for r in reported] == [r.module for r in reports]
    assert scans.threads == {f"hotfix-signal-{signal.SIGUSR1}"}  # not the main thread
    messages = [r.getMessage() for r in caplog.records if r.name == "hotfix.signal"]
    assert any(stale.__name__ in m and "SAFE" in m for m in messages), messages
    assert not any(fresh.__name__ in m for m in messages)
    assert stale.price(2) == 4  # reporting changes nothing


def test_prefixes_restrict_the_scan(modules, restore_sigusr1):
    a = modules.create(V1)
    b = modules.create(V1)
    modules.write(a, V2)
    modules.write(b, V2)
    scans = Scans()
    with install_signal_handler(prefixes=[a.__name__], on_scan=scans):
        os.kill(os.getpid(), signal.SIGUSR1)
        reports = scans.wait(1)
    assert [r.module for r in reports] == [a.__name__]


def test_nothing_stale_logs_so(modules, caplog, restore_sigusr1):
    caplog.set_level(logging.INFO, logger="hotfix.signal")
    mod = modules.create(V1)
    modules.write(mod, V1)  # rewritten with the same content: new mtime, same sha256
    scans = Scans()
    with install_signal_handler(prefixes=[mod.__name__], on_scan=scans):
        os.kill(os.getpid(), signal.SIGUSR1)
        assert scans.wait(1) == []
    assert any("no stale modules" in r.getMessage() for r in caplog.records)


def test_several_signals_each_lead_to_a_scan_and_a_fix_clears_the_report(modules, restore_sigusr1):
    mod = modules.create(V1)
    modules.write(mod, V2)
    scans = Scans()
    with install_signal_handler(prefixes=[mod.__name__], on_scan=scans):
        os.kill(os.getpid(), signal.SIGUSR1)
        assert [r.module for r in scans.wait(1)] == [mod.__name__]
        modules.write(mod, V1)  # back to what is running
        os.kill(os.getpid(), signal.SIGUSR1)
        assert scans.wait(2) == []


def test_uninstall_restores_the_previous_handler(restore_sigusr1):
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGUSR1, previous)
    before = set(threading.enumerate())
    handle = install_signal_handler(prefixes=["no_such_module_prefix"])
    started = set(threading.enumerate()) - before
    assert handle.installed and len(started) == 1
    handle.uninstall()
    handle.uninstall()  # idempotent
    assert not handle.installed
    assert signal.getsignal(signal.SIGUSR1) is previous
    thread = started.pop()
    thread.join(WAIT)
    assert not thread.is_alive()
    os.kill(os.getpid(), signal.SIGUSR1)  # delivered to the restored handler, not ours
    assert calls == [signal.SIGUSR1]
    assert handle.scans == 0


def test_default_handler_is_restored(restore_sigusr1):
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    handle = install_signal_handler(prefixes=["no_such_module_prefix"])
    handle.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_main_thread_only(restore_sigusr1):
    errors = []

    def worker():
        try:
            install_signal_handler()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(WAIT)
    assert len(errors) == 1 and "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGUSR1) == restore_sigusr1  # nothing was installed


def test_scan_can_run_synchronously(modules, restore_sigusr1):
    mod = modules.create(V1)
    modules.write(mod, V2)
    assert [r.module for r in stale_modules(prefixes=mod.__name__)] == [mod.__name__]
    with install_signal_handler(prefixes=[mod.__name__]) as handle:
        assert [r.module for r in handle.scan()] == [mod.__name__]
        assert handle.scans == 1


def test_missing_file_is_reported_as_blocked(modules, restore_sigusr1):
    mod = modules.create(V1)
    os.remove(modules.path(mod.__name__))
    reports = stale_modules()
    mine = [r for r in reports if r.module == mod.__name__]
    assert len(mine) == 1 and mine[0].verdict == "blocked" and mine[0].by_code("file-missing")


CHILD = """
    import os, signal, sys, threading
    sys.path.insert(0, {dir!r})
    import hotfix
    hotfix.install()
    import {name} as mod
    from hotfix._signal import install_signal_handler

    done = threading.Event()
    found = []
    def on_scan(reports):
        found.extend(r.module for r in reports)
        done.set()

    handle = install_signal_handler(prefixes=[{name!r}], on_scan=on_scan)
    with open(mod.__file__, "w") as fh:
        fh.write("def price(qty):\\n    return qty * 3\\n")
    pid = os.fork()
    if pid == 0:  # a pre-fork worker: its own thread answers its own signal
        os.kill(os.getpid(), signal.SIGUSR1)
        ok = done.wait(20)
        os.write(1, ("child %s %s\\n" % (ok, found)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent scans", handle.scans)
    handle.uninstall()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_scanning_thread(modules, tmp_path):
    name = "hfsigchild_" + os.urandom(4).hex()
    (modules.dir / f"{name}.py").write_text(textwrap.dedent(V1))
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(dir=str(modules.dir), name=name)))
    out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"child True ['{name}']" in out.stdout, out
    assert "parent scans 0" in out.stdout, out  # the parent's thread did not take the child's signal
