"""File-watch trigger: events map to modules, bursts are debounced, atomic saves handled.

Every test watches only its own directory under tmp_path and waits on a
``threading.Condition`` with a timeout, never on a sleep.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import textwrap
import threading

import pytest

import hotfix
from hotfix._scope import system_directories
from hotfix._watch import WatchEvent, watch
from tests.helpers import assert_same, snapshot

WAIT = 20.0  # generous: the suite runs in parallel on shared machines
INTERIM = ("waiting", "busy")  # the watcher will act later; tests wait for what it does then

V1 = """
    def price(qty):
        return qty * 2

    class Cart:
        def total(self, items):
            return sum(price(q) for q in items)
"""

V2 = """
    def price(qty):
        return qty * 3

    class Cart:
        def total(self, items):
            return sum(price(q) for q in items)
"""

BROKEN = """
    def price(qty)
        return qty * 3
"""


class Events:
    """on_event collector: waits for a matching event under a condition, with a timeout."""

    def __init__(self) -> None:
        self.items: list[WatchEvent] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, event: WatchEvent) -> None:
        with self._cond:
            self.items.append(event)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT, *, interim: bool = False) -> WatchEvent:
        """The first event matching ``predicate``; ``waiting``/``busy`` (interim) ones only if asked."""
        with self._cond:
            found: list[WatchEvent] = []

            def ready() -> bool:
                found[:] = [e for e in self.items
                            if (interim or e.action not in INTERIM) and predicate(e)]
                return bool(found)

            assert self._cond.wait_for(ready, timeout), f"no matching event within {timeout}s; got {self.items}"
            return found[0]

    def of(self, name: str) -> list[WatchEvent]:
        with self._cond:
            return [e for e in self.items if e.module == name]


def sha(source: str) -> str:
    return hashlib.sha256(textwrap.dedent(source).encode()).hexdigest()


def real(path) -> str:
    return os.path.normcase(os.path.realpath(path))


@pytest.fixture
def events() -> Events:
    return Events()


def test_write_maps_to_its_module_and_dry_run_is_logged_and_reported(modules, events, caplog):
    caplog.set_level(logging.INFO, logger="hotfix.watch")
    target = modules.create(V1)
    other = modules.create(V1)
    before = snapshot(target)
    with watch([modules.dir], debounce=0.05, on_event=events) as watcher:
        assert watcher.directories == (real(modules.dir),)
        modules.write(target, V2)
        event = events.wait_for(lambda e: e.module == target.__name__ and e.action == "dry-run")
    assert event.verdict == "safe"
    assert real(event.path) == real(modules.path(target.__name__))
    assert event.report.module == target.__name__
    assert event.report.source.disk.sha256 == sha(V2)
    assert event.patch_id is None and event.error is None
    assert event.to_dict()["report"]["verdict"] == "safe"
    assert events.threads == {"hotfix-watch"}
    assert events.of(other.__name__) == []  # its file did not change
    assert_same(before, snapshot(target))  # a dry run changes nothing
    assert target.price(2) == 4
    logged = [r for r in caplog.records if r.name == "hotfix.watch" and target.__name__ in r.getMessage()]
    assert any("SAFE" in r.getMessage() for r in logged), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("style", ["in-place", "atomic"])
def test_apply_policy_applies_the_fix_in_place(modules, events, style):
    mod = modules.create(V1)
    price, cart = mod.price, mod.Cart()
    with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events):
        if style == "in-place":
            modules.write(mod, V2)
        else:
            tmp = modules.dir / f".{mod.__name__}.py.tmp"
            tmp.write_text(textwrap.dedent(V2))
            os.replace(tmp, modules.path(mod.__name__))
        event = events.wait_for(lambda e: e.module == mod.__name__ and e.action != "unchanged")
    assert event.action == "applied", event
    assert event.verdict == "safe"
    assert event.patch_id and event.patch_id.startswith("hf-")
    assert mod.price is price  # identity kept
    assert price(2) == 6 and cart.total([1, 2]) == 9
    assert any(getattr(h, "id", None) == event.patch_id for h in hotfix.history())
    assert hotfix.dry_run(mod).verdict == "unchanged"


def test_a_burst_of_writes_gives_one_action(modules, events):
    mod = modules.create(V1)
    marker = modules.create(V1)
    # A large debounce so that no scheduling hiccup between the writes splits the burst.
    with watch([modules.dir], debounce=0.5, on_event=events):
        for i in range(5):
            modules.write(mod, V1.replace("qty * 2", f"qty * {10 + i}"))
        # The marker's events come after all of mod's through the same watch, and its
        # deadline is later: once it has acted, every action for mod has happened.
        modules.write(marker, V2)
        events.wait_for(lambda e: e.module == marker.__name__)
    mine = events.of(mod.__name__)
    assert len(mine) == 1, mine
    assert mine[0].action == "dry-run"
    assert mine[0].report.source.disk.sha256 == sha(V1.replace("qty * 2", "qty * 14"))


@pytest.mark.parametrize("style", ["replace-same-dir", "replace-from-elsewhere", "delete-create", "rename-away"])
def test_atomic_saves_are_handled(modules, events, tmp_path, style):
    mod = modules.create(V1)
    target = modules.path(mod.__name__)
    with watch([modules.dir], debounce=0.05, on_event=events):
        if style == "replace-same-dir":  # most editors: temp file next to the target, rename onto it
            tmp = modules.dir / f"{mod.__name__}.py.swp"
            tmp.write_text(textwrap.dedent(V2))
            os.replace(tmp, target)
        elif style == "replace-from-elsewhere":  # temp file outside the watched directory
            tmp = tmp_path / "staging.py"
            tmp.write_text(textwrap.dedent(V2))
            os.replace(tmp, target)
        elif style == "delete-create":
            os.remove(target)
            target.write_text(textwrap.dedent(V2))
        else:  # vim's backup mode: rename the original away, write a new file
            os.rename(target, target.with_suffix(".py~"))
            target.write_text(textwrap.dedent(V2))
        event = events.wait_for(lambda e: e.module == mod.__name__ and e.report is not None
                                and e.report.source.disk is not None and e.report.source.disk.sha256 == sha(V2))
    assert event.action == "dry-run" and event.verdict == "safe"
    # A quiet period may have fallen between delete and create: that is reported as missing, nothing else.
    for other in events.of(mod.__name__):
        assert other is event or (other.verdict == "blocked" and other.report.by_code("file-missing")), other
    assert mod.price(2) == 4


def test_a_syntax_error_save_is_rejected_and_changes_nothing(modules, events):
    mod = modules.create(V1)
    before = snapshot(mod)
    with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events):
        modules.write(mod, BROKEN)
        event = events.wait_for(lambda e: e.module == mod.__name__)
        assert event.action == "rejected", event
        assert event.verdict == "blocked"
        assert "does not compile" in event.error
        assert event.report.by_code("syntax-error")
        assert_same(before, snapshot(mod))
        # Fixing the file is picked up by the same watcher.
        modules.write(mod, V2)
        fixed = events.wait_for(lambda e: e.module == mod.__name__ and e.action == "applied")
    assert fixed.patch_id and mod.price(2) == 6


def test_risky_change_is_rejected_without_allow_risky(modules, events):
    mod = modules.create(V1)
    before = snapshot(mod)
    with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events):
        modules.write(mod, V1.replace("return qty * 2", "try:\n            return qty * 3\n        except KeyError:\n            return 0"))
        event = events.wait_for(lambda e: e.module == mod.__name__)
    assert event.action == "rejected" and event.verdict == "risky"
    assert "allow_risky" in event.error
    assert_same(before, snapshot(mod))


def test_failing_check_is_rolled_back(modules, events):
    mod = modules.create(V1)
    price = mod.price
    code = price.__code__
    with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events,
               checks=[lambda: mod.price(1) == 2]):
        modules.write(mod, V2)
        event = events.wait_for(lambda e: e.module == mod.__name__)
    assert event.action == "rolled-back", event
    assert event.patch_id and "rolled back" in event.error
    assert mod.price is price and price.__code__ is code


def test_paths_none_watches_module_directories_under_prefixes(modules, events):
    mod = modules.create(V1)
    with watch(prefixes=[mod.__name__], debounce=0.05, on_event=events) as watcher:
        assert watcher.directories == (real(modules.dir),)
        modules.write(mod, V2)
        event = events.wait_for(lambda e: e.module == mod.__name__)
    assert event.action == "dry-run"


def test_default_scope_never_watches_stdlib_site_packages_or_hotfix(modules, events):
    import watchdog

    mod = modules.create(V1)
    stdlib = real(os.path.dirname(os.__file__))
    site_packages = real(os.path.dirname(os.path.dirname(watchdog.__file__)))
    assert stdlib in system_directories()
    assert site_packages in system_directories()
    with watch(debounce=0.05, on_event=events) as watcher:
        dirs = watcher.directories
        assert real(modules.dir) in dirs
        for d in dirs:
            assert not (d == stdlib or d.startswith(stdlib + os.sep)), d
            assert not (d == site_packages or d.startswith(site_packages + os.sep)), d
        assert real(os.path.dirname(hotfix.__file__)) not in dirs
        assert watcher._index.lookup(os.__file__) == []
        assert [n for n, _ in watcher._index.lookup(str(modules.path(mod.__name__)))] == [mod.__name__]


def test_module_imported_after_the_watcher_started_is_mapped(modules, events):
    with watch([modules.dir], debounce=0.05, on_event=events):
        mod = modules.create(V1)  # written, then imported: the first events find no module yet
        modules.write(mod, V2)
        event = events.wait_for(lambda e: e.module == mod.__name__ and e.report is not None
                                and e.report.source.disk.sha256 == sha(V2))
    assert event.action == "dry-run"


def test_a_raising_callback_does_not_stop_the_watcher(modules, caplog):
    caplog.set_level(logging.ERROR, logger="hotfix.watch")
    first = modules.create(V1)
    second = modules.create(V1)
    seen = Events()

    def callback(event: WatchEvent) -> None:
        seen(event)
        if event.module == first.__name__:
            raise RuntimeError("callback bug")

    with watch([modules.dir], debounce=0.05, on_event=callback) as watcher:
        modules.write(first, V2)
        seen.wait_for(lambda e: e.module == first.__name__)
        modules.write(second, V2)
        seen.wait_for(lambda e: e.module == second.__name__)
        assert watcher.running
    assert any("callback raised" in r.getMessage() for r in caplog.records)


def test_polling_observer_for_network_filesystems(modules, events):
    mod = modules.create(V1)
    with watch([modules.dir], debounce=0.05, on_event=events, polling=True):
        modules.write(mod, V2 + "    # a longer file: polling compares size and mtime\n")
        event = events.wait_for(lambda e: e.module == mod.__name__)
    assert event.action == "dry-run" and event.verdict == "safe"


def test_watch_a_single_file(modules, events):
    mod = modules.create(V1)
    sibling = modules.create(V1)
    with watch(modules.path(mod.__name__), debounce=0.05, on_event=events):
        modules.write(sibling, V2)
        modules.write(mod, V2)
        events.wait_for(lambda e: e.module == mod.__name__)
    assert events.of(sibling.__name__) == []


def test_stop_is_clean_and_idempotent(modules, events):
    modules.create(V1)
    before = set(threading.enumerate())
    watcher = watch([modules.dir], debounce=0.05, on_event=events)
    started = set(threading.enumerate()) - before
    assert watcher.running and started
    watcher.stop()
    watcher.stop()
    assert not watcher.running
    for thread in started:
        thread.join(WAIT)
        assert not thread.is_alive(), thread
    assert "stopped" in repr(watcher)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="policy"):
        watch([tmp_path], policy="reload")
    with pytest.raises(ValueError, match="debounce"):
        watch([tmp_path], debounce=-1)
    with pytest.raises(FileNotFoundError):
        watch([tmp_path / "nope"])


def test_unloaded_module_is_ignored(modules, events):
    mod = modules.create(V1)
    sentinel = modules.create(V1)
    with watch([modules.dir], debounce=0.05, on_event=events):
        sys.modules.pop(mod.__name__)
        modules.write(mod, V2)
        modules.write(sentinel, V2)
        events.wait_for(lambda e: e.module == sentinel.__name__)
    assert events.of(mod.__name__) == []


def test_files_changed_in_one_burst_are_applied_as_one_unit(modules, events):
    a = modules.create(V1)
    b = modules.create(V1)
    # a generous quiet period so no scheduling hiccup between the two writes splits the burst
    with watch([modules.dir], policy="apply", debounce=1.0, probation=0, on_event=events):
        modules.write(a, V2)
        modules.write(b, V2)
        first = events.wait_for(lambda e: e.module == a.__name__ and e.action != "unchanged")
        second = events.wait_for(lambda e: e.module == b.__name__ and e.action != "unchanged")
    assert first.action == second.action == "applied", (first, second)
    assert first.patch_id == second.patch_id  # one patch: one pause, all or nothing
    patch = next(h for h in hotfix.history() if getattr(h, "id", None) == first.patch_id)
    assert set(patch.modules) == {a.__name__, b.__name__}
    assert a.price(2) == b.price(2) == 6


def test_one_broken_file_in_a_burst_applies_none(modules, events):
    a = modules.create(V1)
    b = modules.create(V1)
    before_a, before_b = snapshot(a), snapshot(b)
    with watch([modules.dir], policy="apply", debounce=1.0, probation=0, on_event=events):
        modules.write(a, V2)
        modules.write(b, BROKEN)
        first = events.wait_for(lambda e: e.module == a.__name__ and e.action != "unchanged")
        second = events.wait_for(lambda e: e.module == b.__name__ and e.action != "unchanged")
    assert first.action == second.action == "rejected", (first, second)
    assert "does not compile" in first.error
    assert_same(before_a, snapshot(a))
    assert_same(before_b, snapshot(b))


# --------------------------------------------------------------------------- stability, busy, later imports

FULL_V1 = """
    def price(qty):
        return qty * 2

    def tax(amount):
        return amount // 10

    def total(qty):
        return price(qty) + tax(price(qty))
"""
FULL_V2 = """
    def price(qty):
        return qty * 3

    def tax(amount):
        return amount // 10

    def total(qty):
        return price(qty) + tax(price(qty))
"""
#: What a copy that stalled after ``price`` leaves: it compiles, and drops ``tax`` and ``total``.
HALF_V2 = FULL_V2[:FULL_V2.index("    def tax")]


def _writers():
    out = ["held-open"]
    if sys.platform.startswith("linux") and os.path.exists("/bin/cp"):
        out.append("stalled-cp")
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify reports a writer closing the file")
@pytest.mark.parametrize("writer", _writers())
def test_a_half_copied_file_is_never_applied(modules, events, writer):
    """Defect 8: a copy stalled longer than the quiet period left a half file that compiled; it was
    applied, and unchanged callers of the missing functions raised NameError."""
    import subprocess

    mod = modules.create(FULL_V1)
    total, price = mod.total, mod.price
    path = modules.path(mod.__name__)
    data = textwrap.dedent(FULL_V2).encode()
    half = textwrap.dedent(HALF_V2).encode()
    with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events):
        if writer == "held-open":  # rsync --inplace / a slow writer: the same file, still open
            fh = open(path, "r+b")  # held open on purpose
            fh.truncate(0)
            fh.write(half)
            fh.flush()
            finish = lambda: (fh.write(data[len(half):]), fh.close())  # noqa: E731
        else:  # a real cp whose source stalls half way (a pipe)
            cp = subprocess.Popen(["/bin/cp", "/dev/stdin", str(path)], stdin=subprocess.PIPE)
            assert cp.stdin is not None
            cp.stdin.write(half)
            cp.stdin.flush()

            def finish():
                cp.stdin.write(data[len(half):])
                cp.stdin.close()
                assert cp.wait(WAIT) == 0

        waiting = events.wait_for(lambda e: e.module == mod.__name__ and e.action == "waiting", interim=True)
        assert "open for writing" in waiting.error
        assert path.read_bytes() == half  # the half file is on disk, compiles, and was not applied
        assert hotfix.dry_run(mod).verdict != "unchanged"
        assert mod.total(1) == 2 and mod.total.__code__ is total.__code__
        finish()
        event = events.wait_for(lambda e: e.module == mod.__name__)
    assert event.action == "applied", event
    assert event.report.source.disk.sha256 == sha(FULL_V2)  # the whole file, not the half
    assert price(2) == 6 and total(10) == 33


def test_an_apply_refused_as_busy_is_retried_when_the_transaction_ends(modules, events):
    """Defect 8: a watcher apply refused as busy was never retried."""
    other = modules.create(V1)
    mod = modules.create(V1)
    modules.write(other, V2)
    entered, release = threading.Event(), threading.Event()

    def slow_check():
        entered.set()
        return release.wait(WAIT)

    errors = []
    runner = threading.Thread(target=lambda: _apply_collecting(other, slow_check, errors))
    runner.start()
    try:
        assert entered.wait(WAIT)  # a transaction is running
        with watch([modules.dir], policy="apply", debounce=0.05, probation=0, on_event=events,
                   prefixes=[mod.__name__]):
            modules.write(mod, V2)
            busy = events.wait_for(lambda e: e.module == mod.__name__ and e.action == "busy", interim=True)
            assert mod.price(2) == 4  # not applied while the other transaction runs
            release.set()
            event = events.wait_for(lambda e: e.module == mod.__name__)
    finally:
        release.set()
        runner.join(WAIT)
    assert busy.error
    assert event.action == "applied", event
    assert mod.price(2) == 6
    assert errors == []


def _apply_collecting(module, check, errors):
    try:
        hotfix.apply(module, checks=[check], probation=0)
    except Exception as exc:  # reported to the test
        errors.append(exc)


def test_watch_with_paths_none_follows_modules_imported_later(modules, events):
    """Started early, the watcher picks up a module imported afterwards from a new directory."""
    with watch(debounce=0.05, on_event=events) as watcher:
        assert real(modules.dir) not in watcher.directories
        mod = modules.create(V1)
        modules.write(mod, V2)  # possibly before the directory is watched: found stale on refresh
        event = events.wait_for(lambda e: e.module == mod.__name__ and e.report is not None
                                and e.report.source.disk.sha256 == sha(V2))
        assert real(modules.dir) in watcher.directories
    assert event.action == "dry-run"
