"""File-watch trigger: map changed files to loaded modules, debounce, dry-run or apply.

Design notes.

*What editors do on save.* Few editors simply rewrite the file in place
(truncate + write: one or more ``modified`` events, then ``closed`` on
Linux). Most save atomically: they write a temporary file next to the
target (``.mod.py.swp``, ``mod.py~``, ``.goutputstream-XXXX``, ``4913``...)
and rename it onto the target, which watchdog reports as a ``moved`` event
whose ``dest_path`` is the module file (or as ``created`` when the
temporary file lived in an unwatched directory). Others delete the target
and create it again, or rename the old file away first (vim's backup
mode). So every one of ``modified``, ``closed``, ``created``, ``deleted``
and both ends of ``moved`` counts as "this module's file may have
changed"; watchdog's ``opened``/``closed_no_write`` events are filtered
out, which also keeps our own reads of the file from triggering us.

*Why debounce.* One save is a burst of events, possibly a temporary
state in which the file is missing or half written; a ``git checkout`` is
a burst over many files. Acting on the first event would verify a file
that is still being written. Each module gets a deadline, pushed back by
every event, and acts once after ``debounce`` seconds of quiet.

*Why quiet is not enough.* A copy that stalls (``scp``, ``rsync
--inplace``, a slow ``cp``) is quiet too, and its half file may well
compile: applied, it drops the functions not yet copied. So a file is acted
on only once it is *stable*: not open for writing (inotify reports the
writer closing it) and unchanged in size, mtime and sha256 across one more
quiet period; verification then refuses one that does not compile. An
apply refused because another transaction is running is retried once that
transaction has ended, with the file as it is then. A single
daemon thread waits on a condition until the earliest deadline (no
polling loop) and runs the actions one at a time, so ``apply`` calls from
the watcher never race each other. It acts on the file as it is then: the
dry run hashes the content, and ``apply`` is pinned to that hash
(``expect_sha256``), so a write racing the apply is refused and, having
produced its own events, retried after the next quiet period.

*Limits.* inotify (Linux), FSEvents and kqueue do not see changes made on
another machine to a network filesystem (NFS, SMB, many container bind
mounts on macOS/Windows hosts); pass ``polling=True`` there (watchdog's
``PollingObserver`` compares directory snapshots by mtime and size, so it
misses an edit that keeps both; the dry run itself always hashes).
inotify watches are a per-user kernel resource (``fs.inotify.max_user_watches``,
``max_user_instances``); ``paths=None`` watches only the directories of
loaded modules, non-recursively, and never the standard library or
site-packages, so the cost stays at one watch per source directory. A
module imported later is followed by itself: about once a second, when
``sys.modules`` grew, the index is refreshed and new directories watched
(and a module whose file changed before that is looked at right away).
``__main__`` cannot be patched and is not watched.
*Several files in one burst* (a ``git pull``, a deploy copying a
directory): the quiet period is shared, so every module touched by the
burst becomes due together, and policy ``apply`` patches them as **one
unit** (``hotfix.apply([...])``: one pause, all or nothing). If any of them
is refused, none is applied: a deploy is never left half in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from verification import UNCHANGED, Report

from ._exceptions import PatchRejected, PatchRolledBack
from ._outcomes import Reason
from ._scope import Scope, normalize_prefixes, real_path, source_file, staleness, under
from ._transaction import DEFAULT_PROBATION, DEFAULT_TIMEOUT, apply, dry_run

__all__ = ["POLICIES", "WatchEvent", "Watcher", "watch"]

_log = logging.getLogger("hotfix.watch")

POLICIES = ("dry-run", "apply")

#: The event types that can mean "the file's content changed".
_EVENT_FILTER = [FileModifiedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent]
_SOURCE_SUFFIXES = (".py", ".pyw")
#: What an event says about a file: written to (maybe still open), closed after writing, gone, other.
_WRITTEN, _CLOSED, _GONE, _CHANGED = "written", "closed", "gone", "changed"
#: Retry delays after an apply was refused as busy: doubling, capped.
_BUSY_RETRY_MAX = 1.0


@attrs.frozen
class WatchEvent:
    """What the watcher did about one module after a burst of file events.

    ``action`` is one of ``dry-run`` (policy dry-run, the file differs),
    ``unchanged`` (the running code already is the disk source), ``applied``,
    ``rejected`` (nothing changed: blocked, risky, or a precondition
    failed), ``rolled-back`` (applied, then undone by a check or probation),
    ``error`` (an unexpected failure, logged with its traceback),
    ``waiting`` (the file is still open for writing or changed during the
    quiet period: it is looked at again, nothing was done yet) or ``busy``
    (another transaction was running: retried once it has ended). ``waiting``
    and ``busy`` are reported once per module until it is acted on.
    """

    module: str
    path: str
    action: str
    verdict: str | None = None  # the dry-run verdict, when one was made
    patch_id: str | None = None
    error: str | None = None  # the one-sentence message of a rejection, rollback or error
    report: Report | None = attrs.field(default=None, repr=False, eq=False)
    at: float = attrs.field(factory=time.time, eq=False)

    def to_dict(self) -> dict:
        return {
            "module": self.module,
            "path": self.path,
            "action": self.action,
            "verdict": self.verdict,
            "patch_id": self.patch_id,
            "error": self.error,
            "at": self.at,
            "report": self.report.to_dict() if self.report is not None else None,
        }


# --------------------------------------------------------------------------- scope


@attrs.frozen
class _WatchScope:
    """Which loaded modules the watcher acts on: in ``scope`` (see ``hotfix._scope``) and, when
    paths were given, loaded from a file under them."""

    scope: Scope
    paths: tuple[str, ...] | None  # canonical watched directories and files; None: paths=None

    def accepts(self, name: str, path: str) -> bool:
        if not self.scope.allows(name, path):
            return False
        return self.paths is None or any(under(real_path(path), p) for p in self.paths)


class _ModuleIndex:
    """Source path -> loaded module names, refreshed incrementally from ``sys.modules``."""

    def __init__(self, scope: _WatchScope) -> None:
        self.scope = scope
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, tuple[str, ...], str | None]] = {}  # name -> (id, keys, path)
        self._by_path: dict[str, set[str]] = {}

    def refresh(self) -> list[tuple[str, str]]:
        """Bring the index up to date; returns ``(name, source path)`` of modules newly in it."""
        added: list[tuple[str, str]] = []
        with self._lock:
            current = list(sys.modules.items())
            names = set()
            for name, module in current:
                names.add(name)
                seen = self._seen.get(name)
                if seen is not None and seen[0] == id(module):
                    continue
                if seen is not None:
                    self._drop(name, seen[1])
                keys, path = self._keys(name, module)
                self._seen[name] = (id(module), keys, path)
                for key in keys:
                    self._by_path.setdefault(key, set()).add(name)
                if path is not None:
                    added.append((name, path))
            for name in [n for n in self._seen if n not in names]:
                self._drop(name, self._seen.pop(name)[1])
        return added

    def _drop(self, name: str, keys: tuple[str, ...]) -> None:
        for key in keys:
            owners = self._by_path.get(key)
            if owners is not None:
                owners.discard(name)
                if not owners:
                    del self._by_path[key]

    def _keys(self, name: str, module: object) -> tuple[tuple[str, ...], str | None]:
        if not isinstance(module, types.ModuleType):
            return (), None
        path = source_file(module)
        if path is None or not self.scope.accepts(name, path):
            return (), None
        real = real_path(path)
        return tuple({real, os.path.normcase(os.path.abspath(path))}), path

    def lookup(self, path: str) -> list[tuple[str, str]]:
        """``(module name, source path)`` for every in-scope module loaded from ``path``."""
        candidates = (os.path.normcase(os.path.abspath(path)), real_path(path))
        with self._lock:
            names: set[str] = set()
            for key in candidates:
                names.update(self._by_path.get(key, ()))
            return sorted((n, self._seen[n][2] or path) for n in names)

    def directories(self) -> set[str]:
        with self._lock:
            return {real_path(os.path.dirname(p)) for _, _, p in self._seen.values() if p is not None}


# --------------------------------------------------------------------------- debounce


class _Debouncer:
    """Per-key deadlines pushed back by every poke; one thread runs each due key once.

    ``tick`` (if given) is called in that thread about every ``tick_interval``
    seconds while nothing is due (the watcher uses it to follow new imports).
    """

    def __init__(self, delay: float, action: Callable[[list[tuple[str, str]]], None],
                 tick: Callable[[], None] | None = None, tick_interval: float = 1.0) -> None:
        self.delay = delay
        self._action = action
        self._tick = tick
        self._tick_interval = tick_interval
        self._cond = threading.Condition()
        self._due: dict[str, tuple[float, str]] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="hotfix-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self, key: str, path: str) -> None:
        with self._cond:
            if self._stopped:
                return
            deadline = time.monotonic() + self.delay
            # One quiet period for the whole burst: files changed together are acted on together.
            for other, (_, other_path) in list(self._due.items()):
                self._due[other] = (deadline, other_path)
            self._due.pop(key, None)  # re-inserted last: a batch runs in the order of last change
            self._due[key] = (deadline, path)
            self._cond.notify()

    def later(self, batch: list[tuple[str, str]], delay: float) -> None:
        """Act on ``batch`` again, together, after ``delay`` (unless a poke comes first)."""
        with self._cond:
            if self._stopped:
                return
            deadline = time.monotonic() + delay
            for key, path in batch:
                current = self._due.get(key)
                self._due[key] = (max(deadline, current[0]) if current else deadline, path)
            self._cond.notify()

    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._due)

    def stop(self, timeout: float | None) -> None:
        with self._cond:
            self._stopped = True
            self._due.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def _next(self) -> list[tuple[str, str]] | None:
        next_tick = time.monotonic() + self._tick_interval
        while True:
            with self._cond:
                if self._stopped:
                    return None
                now = time.monotonic()
                ready = [(k, p) for k, (t, p) in self._due.items() if t <= now]
                if ready:
                    for key, _ in ready:
                        del self._due[key]
                    return ready
                timeout = min(t for t, _ in self._due.values()) - now if self._due else None
                if self._tick is not None:
                    timeout = min(timeout, next_tick - now) if timeout is not None else next_tick - now
                if timeout is None or timeout > 0:
                    self._cond.wait(timeout)
            if self._tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self._tick_interval
                try:
                    self._tick()
                except Exception:  # nothing may kill the watcher thread
                    _log.exception("hotfix.watch: refreshing the module index failed")

    def _run(self) -> None:
        while (batch := self._next()) is not None:
            with self._cond:
                if self._stopped:
                    return
            try:
                self._action(batch)
            except BaseException:  # nothing may kill the watcher thread
                _log.exception("hotfix.watch: unexpected failure acting on %s", ", ".join(k for k, _ in batch))


# --------------------------------------------------------------------------- watcher


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's dispatch thread: map the event to modules and poke the debouncer."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                # The source went away; the destination is complete (renamed after it was written).
                if event.src_path:
                    self._watcher._file_event(os.fsdecode(event.src_path), _GONE)
                if event.dest_path:
                    self._watcher._file_event(os.fsdecode(event.dest_path), _CLOSED)
                return
            kind = {FileModifiedEvent: _WRITTEN, FileClosedEvent: _CLOSED, FileDeletedEvent: _GONE}.get(
                type(event), _CHANGED)
            self._watcher._file_event(os.fsdecode(event.src_path), kind)
        except BaseException:  # never let an exception escape into watchdog
            _log.exception("hotfix.watch: failed to handle %r", event)


class Watcher:
    """A running file watcher (see ``watch``). Stop it with ``stop()`` or use it as a context manager."""

    def __init__(
        self,
        index: _ModuleIndex,
        *,
        explicit_paths: bool,
        policy: str,
        debounce: float,
        allow_risky: bool,
        probation: float,
        timeout: float,
        checks: Sequence[Callable[[], object]],
        on_event: Callable[[WatchEvent], object] | None,
        polling: bool,
    ) -> None:
        self.policy = policy
        self.debounce = debounce
        self.allow_risky = allow_risky
        self.probation = probation
        self.timeout = timeout
        self.checks = tuple(checks)
        self.on_event = on_event
        self._index = index
        self._explicit = explicit_paths
        self._lock = threading.Lock()
        self._watched: dict[str, bool] = {}  # directory -> recursive
        self._stopped = False
        self._debouncer = _Debouncer(debounce, self._act_batch,
                                     tick=None if explicit_paths else self._follow_imports)
        self._handler = _Handler(self)
        self._modules_seen = len(sys.modules)
        # Stability: files written to and not yet closed (inotify reports close-after-write), the
        # snapshot of each due module at its previous due time, and modules told they must wait.
        self._open_for_writing: set[str] = set()
        self._snapshots: dict[str, _Snapshot] = {}
        self._waiting: set[str] = set()
        self._busy_delay: dict[str, float] = {}
        if polling:
            from watchdog.observers.polling import PollingObserver

            self._observer: Any = PollingObserver(timeout=max(min(debounce, 1.0), 0.05))
        else:
            from watchdog.observers import Observer

            self._observer = Observer()
        # inotify reports a writer closing a file; other backends do not (then stability alone decides).
        self._reports_close = type(self._observer).__name__.startswith("Inotify")

    # -- lifecycle

    def _start(self, directories: Iterable[tuple[str, bool]]) -> None:
        self._debouncer.start()
        try:
            for directory, recursive in directories:
                self._schedule(directory, recursive)
            self._observer.start()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, OSError):
                raise OSError(
                    exc.errno,
                    f"hotfix.watch could not watch {len(self._watched)} directories: {exc.strerror or exc};"
                    " on Linux raise fs.inotify.max_user_watches / max_user_instances, watch fewer paths,"
                    " or pass polling=True",
                ) from exc
            raise

    def _schedule(self, directory: str, recursive: bool) -> None:
        with self._lock:
            if self._watched.get(directory) is not None and (self._watched[directory] or not recursive):
                return
            self._watched[directory] = recursive
        self._observer.schedule(self._handler, directory, recursive=recursive, event_filter=_EVENT_FILTER)

    @property
    def directories(self) -> tuple[str, ...]:
        """The directories being watched (real paths)."""
        with self._lock:
            return tuple(sorted(self._watched))

    @property
    def running(self) -> bool:
        return not self._stopped and self._debouncer.thread.is_alive()

    def pending(self) -> list[str]:
        """Modules with a change waiting for its quiet period."""
        return self._debouncer.pending()

    def refresh(self) -> list[str]:
        """Pick up modules imported since the watcher started; returns newly watched directories.

        With ``paths=None`` this happens by itself about once a second after
        ``sys.modules`` grew. With explicit ``paths`` the watched directories
        never change; only the module index is refreshed.
        """
        new_modules = self._index.refresh()
        if self._stopped:
            return []
        added = []
        if not self._explicit:
            for directory in sorted(self._index.directories()):
                if directory not in self._watched and os.path.isdir(directory):
                    self._schedule(directory, False)
                    added.append(directory)
        # A module whose file changed before its directory was watched produced no event we saw.
        for name, path in new_modules:
            if staleness(name) is not None:
                self._debouncer.poke(name, path)
        return added

    def _follow_imports(self) -> None:
        """Debounce thread, about once a second: index modules imported since the last look."""
        count = len(sys.modules)
        if count != self._modules_seen:
            self._modules_seen = count
            self.refresh()

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching. Changes still waiting for their quiet period are dropped.

        Waits (up to ``timeout``) for an action in progress, such as an apply
        in its probation window, to finish. Idempotent.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            if self._observer.is_alive():
                self._observer.stop()
                if threading.current_thread() is not self._observer:
                    self._observer.join(timeout)
        finally:
            self._debouncer.stop(timeout)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<hotfix.Watcher {state} policy={self.policy} directories={len(self._watched)}>"

    # -- events (watchdog's thread)

    def _file_event(self, path: str, kind: str = _CHANGED) -> None:
        if self._stopped or not path.endswith(_SOURCE_SUFFIXES):
            return
        if self._reports_close:
            real = real_path(path)
            with self._lock:
                if kind == _WRITTEN:
                    self._open_for_writing.add(real)
                elif kind in (_CLOSED, _GONE):
                    self._open_for_writing.discard(real)
        hits = self._index.lookup(path)
        if not hits:
            self._index.refresh()  # a module imported after the watcher started
            hits = self._index.lookup(path)
        for name, _source in hits:
            self._debouncer.poke(name, _source)

    # -- actions (the debounce thread)

    def _act_batch(self, batch: list[tuple[str, str]]) -> None:
        """Everything that became due together: once stable, dry-run each; with policy ``apply``,
        apply the changed ones as one unit (one module alone is just a unit of one)."""
        if not self._stable(batch):
            return
        changed = []
        for name, path in batch:
            module = sys.modules.get(name)
            if module is None:
                _log.debug("%s changed on disk but is no longer loaded", name)
                continue
            try:
                report = dry_run(module)
            except Exception as exc:  # reported as an event, never raised into a thread
                _log.exception("dry run of %s failed", name)
                self._emit(WatchEvent(name, path, "error", error=f"{type(exc).__name__}: {exc}"))
                continue
            if self.policy == "dry-run" or report.verdict == UNCHANGED:
                self._emit_report(name, path, report)
            else:
                changed.append((module, path, report))
        if changed:
            self._apply_unit(changed)

    def _stable(self, batch: list[tuple[str, str]]) -> bool:
        """Is every file of the batch done being written? If not, look again after a quiet period.

        Stable means: not open for writing (on Linux, inotify reports when a
        writer closes the file: a stalled ``cp`` or ``rsync --inplace`` holds
        it open), and the same size, mtime and sha256 as one quiet period ago
        (a change no event reported, a polling observer). A half-copied file
        that happens to compile is therefore never applied while its writer
        is still at it.
        """
        writing = []
        unsettled = []
        for name, path in batch:
            with self._lock:
                is_open = real_path(path) in self._open_for_writing
            if is_open:
                writing.append((name, path))
                continue
            now = _Snapshot.of(path)
            before = self._snapshots.get(name)
            self._snapshots[name] = now
            if before != now:
                unsettled.append((name, path, before is not None))
        if not writing and not unsettled:
            for name, _ in batch:
                self._snapshots.pop(name, None)
                self._waiting.discard(name)
            return True
        for name, path in writing:
            self._report_waiting(name, path, "still open for writing; applied once the writer closes it")
        for name, path, seen in unsettled:
            if seen:  # the first look only starts the quiet period
                self._report_waiting(name, path, "changed during the quiet period; looking again")
        self._debouncer.later(batch, self.debounce)
        return False

    def _report_waiting(self, name: str, path: str, why: str) -> None:
        if name in self._waiting:
            return
        self._waiting.add(name)
        _log.info("%s: %s %s", name, path, why)
        self._emit(WatchEvent(name, path, "waiting", error=why))

    def _apply_unit(self, changed: list[tuple[types.ModuleType, str, Report]]) -> None:
        names = ", ".join(m.__name__ for m, _, _ in changed)
        pins = [r.source.disk.sha256 if r.source.disk is not None else "" for _, _, r in changed]
        returned: Any = None  # the report(s) the exception carries: one Report for a unit of one
        patch_id: str | None
        error: str | None
        try:
            patch = apply([m for m, _, _ in changed], checks=self.checks, probation=self.probation,
                          timeout=self.timeout, allow_risky=self.allow_risky, expect_sha256=pins,
                          actor="file watcher")
        except PatchRolledBack as exc:
            _log.warning("%s applied and rolled back: %s", names, exc.message)
            action, patch_id, error, returned = "rolled-back", exc.details.get("patch_id"), exc.message, exc.report
        except PatchRejected as exc:
            if exc.reason == Reason.BUSY:
                self._retry_when_idle(changed, exc.message)
                return
            _log.warning("%s not applied (one unit, all or nothing): %s", names, exc.message)
            action, patch_id, error, returned = "rejected", None, exc.message, exc.report
        except Exception as exc:  # reported as an event, never raised into a thread
            _log.exception("applying %s failed unexpectedly", names)
            action, patch_id, error = "error", None, f"{type(exc).__name__}: {exc}"
        else:
            _log.info("%s %s as %s", names, patch.status, patch.id)
            action, patch_id, error = patch.status, patch.id, None
        for module, path, report in changed:
            self._busy_delay.pop(module.__name__, None)
            self._emit(WatchEvent(module.__name__, path, action, report.verdict, patch_id, error,
                                  _single(returned, report)))

    def _retry_when_idle(self, changed: list[tuple[types.ModuleType, str, Report]], message: str) -> None:
        """Another transaction is running: look again (dry-run, then apply) once it has ended.

        The transaction gives no signal when it ends, so the unit is retried
        with a delay doubling from the quiet period up to a second; each try
        re-reads the file, so the newest content is what gets applied.
        """
        batch = [(m.__name__, path) for m, path, _ in changed]
        first = batch[0][0]
        delay = min(_BUSY_RETRY_MAX, max(self._busy_delay.get(first, 0.0) * 2, self.debounce, 0.05))
        for name, path in batch:
            if name not in self._busy_delay:
                _log.info("%s: another transaction is running; retried when it has ended", name)
                self._emit(WatchEvent(name, path, "busy", error=message))
            self._busy_delay[name] = delay
            self._snapshots.pop(name, None)
        self._debouncer.later(batch, delay)

    def _emit_report(self, name: str, path: str, report: Report) -> None:
        if report.verdict == UNCHANGED:
            _log.debug("%s: file event, content unchanged", name)
            action = "unchanged"
        else:
            level = logging.WARNING if report.verdict in ("risky", "blocked") else logging.INFO
            _log.log(level, "dry run after a change on disk:\n%s", report)
            action = "dry-run"
        self._emit(WatchEvent(name, path, action, report.verdict, None, None, report))

    def _emit(self, event: WatchEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a broken callback must not stop the watcher
            _log.exception("hotfix.watch: on_event callback raised for %s", event.module)


@attrs.frozen
class _Snapshot:
    """What "the file did not change" compares: size, mtime and content hash (``None``: unreadable)."""

    size: int | None
    mtime_ns: int | None
    sha256: str | None

    @classmethod
    def of(cls, path: str) -> _Snapshot:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except OSError:
            return cls(None, None, None)
        return cls(st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def _single(report: Any, fallback: Report) -> Report:
    return report if isinstance(report, Report) else fallback


def watch(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None,
    *,
    policy: str = "dry-run",
    debounce: float = 0.3,
    allow_risky: bool = False,
    probation: float = DEFAULT_PROBATION,
    timeout: float = DEFAULT_TIMEOUT,
    checks: Iterable[Callable[[], object]] = (),
    on_event: Callable[[WatchEvent], object] | None = None,
    prefixes: str | Iterable[str] | None = None,
    polling: bool = False,
) -> Watcher:
    """Watch source files of loaded modules; dry-run (or apply) each changed module.

    ``paths``: directories (watched recursively) or files. ``None`` watches
    the directory of every loaded source module in scope, non-recursively;
    without ``prefixes`` that is application code: not the standard library,
    not site-packages (see ``hotfix._scope``). ``prefixes`` restricts the
    modules to those dotted-name prefixes (and then includes them wherever
    they are installed). hotfix's own packages and ``__main__`` are never
    watched.

    ``policy="dry-run"`` logs the report (logger ``hotfix.watch``);
    ``policy="apply"`` calls ``hotfix.apply`` (with ``checks``,
    ``probation``, ``timeout``, ``allow_risky``, pinned to the content the
    dry run saw). Each outcome is passed to ``on_event`` as a ``WatchEvent``,
    in the watcher's thread; exceptions never escape that thread.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if debounce < 0:
        raise ValueError("debounce must be >= 0 seconds")
    prefix_tuple = normalize_prefixes(prefixes)
    explicit = paths is not None
    directories: list[tuple[str, bool]] = []
    watched: list[str] = []
    if paths is not None:
        items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        for item in items:
            real = real_path(os.fspath(item))
            if os.path.isdir(real):
                directories.append((real, True))
            elif os.path.isfile(real):
                directories.append((os.path.dirname(real), False))
            else:
                raise FileNotFoundError(f"hotfix.watch: {os.fspath(item)} is neither a file nor a directory")
            watched.append(real)
    if prefix_tuple is not None:
        scope = _WatchScope(Scope.of(prefix_tuple), tuple(watched) if explicit else None)
    elif explicit:
        scope = _WatchScope(Scope.of(roots=watched), tuple(watched))
    else:
        scope = _WatchScope(Scope(), None)
    index = _ModuleIndex(scope)
    index.refresh()
    if not explicit:
        directories = [(d, False) for d in sorted(index.directories()) if os.path.isdir(d)]
    watcher = Watcher(index, explicit_paths=explicit, policy=policy, debounce=debounce,
                      allow_risky=allow_risky, probation=probation, timeout=timeout,
                      checks=list(checks), on_event=on_event, polling=polling)
    watcher._start(directories)
    _log.info("watching %d directories (policy %s, debounce %.2fs)", len(watcher.directories), policy, debounce)
    return watcher
