"""Signal trigger: on a signal, log a dry-run report of every stale module.

The handler does no work: Python runs signal handlers in the main thread
between bytecodes, possibly while that thread holds a lock the work would
need (the logging module's, our baseline table's, an import lock), so a
handler that dry-ran modules could deadlock or run arbitrarily long inside
whatever the main thread was doing. It only writes one byte to a pipe
(the self-pipe trick: no lock, cannot block, a full pipe already means
"wake up"). A daemon thread blocked on the other end drains the pipe and
scans, so a storm of signals coalesces into one more scan.

A module is *stale* when the code running is not what is on disk. Which
modules are considered and how staleness is found cheaply is
``hotfix._scope``'s answer, shared with the endpoint and the watcher: with
``prefixes``, the loaded modules under them; without, application code
with a baseline. Only a module whose file's hash differs from its baseline
gets a full dry run; a module without a baseline (imported before
``install()``) needs the dry run's compile-and-compare, which is why it is
only done for modules named by ``prefixes``. Each stale module's report
(verdict other than ``unchanged``) is logged; nothing is applied.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import types
import weakref
from collections.abc import Callable, Iterable

from verification import UNCHANGED, Report

from ._baseline import get_baseline
from ._scope import Scope, normalize_prefixes, staleness
from ._transaction import dry_run

__all__ = ["SignalHandle", "install_signal_handler", "stale_modules"]

_log = logging.getLogger("hotfix.signal")

_WAKE = b"!"


def stale_modules(prefixes: str | Iterable[str] | None = None, *,
                  logger: logging.Logger | None = None) -> list[Report]:
    """Dry-run reports of every loaded module whose running code differs from its file.

    Considers the modules in scope (``hotfix._scope``): under ``prefixes`` if
    given, else application code. A module with a baseline is dry-run only
    when its file's sha256 differs from the baseline (a stat check first,
    see ``hotfix._scope``); one without a baseline (imported before
    ``install()``) needs the dry run's compile-and-compare, so it is only
    considered when named by ``prefixes``. Reports with verdict
    ``unchanged`` are left out. Changes nothing, runs no module code.
    Sorted by module name.
    """
    log = logger or _log
    scope = Scope.of(prefixes)
    reports = []
    for name, module in scope.modules():
        if get_baseline(name) is None:
            if scope.application_code:
                continue
        elif staleness(name) is None:
            continue
        try:
            report = dry_run(module)
        except Exception:  # one odd module must not end the scan
            log.exception("dry run of %s failed", name)
            continue
        if report.verdict != UNCHANGED:
            reports.append(report)
    return reports


class SignalHandle:
    """An installed signal trigger. ``uninstall()`` restores the previous handler."""

    def __init__(
        self,
        signum: int,
        prefixes: tuple[str, ...] | None,
        logger: logging.Logger,
        on_report: Callable[[Report], object] | None,
        on_scan: Callable[[list[Report]], object] | None,
    ) -> None:
        self.signum = signum
        self.prefixes = prefixes
        self.logger = logger
        self.on_report = on_report
        self.on_scan = on_scan
        self.scans = 0
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._previous: object = None
        self._installed = False
        self._quit = False
        self._lock = threading.Lock()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, args=(self._rfd,), name=f"hotfix-signal-{self.signum}", daemon=True)

    # -- the handler: no work here

    def _handler(self, signum: int, frame: types.FrameType | None) -> None:
        fd = self._wfd
        if fd < 0:
            return
        try:
            os.write(fd, _WAKE)
        except OSError:  # pipe full: a scan is already due
            pass

    # -- the thread

    def _run(self, rfd: int) -> None:
        try:
            while True:
                try:
                    data = os.read(rfd, 4096)  # drains every pending wake-up at once
                except OSError:
                    return
                if not data or self._quit:  # EOF: uninstall closed the write end
                    return
                try:
                    self.scan()
                except BaseException:  # the scanning thread must survive
                    self.logger.exception("hotfix signal scan failed")
        finally:
            os.close(rfd)

    def scan(self) -> list[Report]:
        """What the signal does, synchronously: find stale modules, log and return their reports."""
        reports = stale_modules(self.prefixes, logger=self.logger)
        with self._lock:
            self.scans += 1
        signame = _signal_name(self.signum)
        if not reports:
            self.logger.info("%s: no stale modules", signame)
        for report in reports:
            level = logging.WARNING if report.verdict in ("risky", "blocked") else logging.INFO
            self.logger.log(level, "%s: stale module %s (%s):\n%s", signame, report.module, report.verdict,
                            report, extra={"hotfix_report": report.to_dict()})
            if self.on_report is not None:
                try:
                    self.on_report(report)
                except Exception:  # a broken callback must not stop the scan
                    self.logger.exception("on_report callback raised for %s", report.module)
        if self.on_scan is not None:
            try:
                self.on_scan(reports)
            except Exception:
                self.logger.exception("on_scan callback raised")
        return reports

    # -- install / uninstall

    def _install(self) -> None:
        self._thread.start()
        try:
            self._previous = signal.signal(self.signum, self._handler)
        except BaseException:
            self._stop_thread()
            raise
        self._installed = True
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:
            handle = ref()
            if handle is not None:
                handle._after_fork_in_child()

        os.register_at_fork(after_in_child=after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        """A forked child (pre-fork servers) inherits the handler but not the thread: give it its own."""
        if not self._installed:
            return
        for fd in (self._rfd, self._wfd):  # the parent's pipe: the parent's thread reads it
            if fd >= 0:
                os.close(fd)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._quit = False
        self._lock = threading.Lock()
        self._thread = self._new_thread()
        self._thread.start()

    @property
    def installed(self) -> bool:
        return self._installed

    def uninstall(self) -> None:
        """Restore the handler that was there before and stop the thread. Main thread only; idempotent.

        If another handler was installed over ours since, it is left in place.
        """
        if not self._installed:
            return
        _require_main_thread("uninstall the hotfix signal handler")
        current = signal.getsignal(self.signum)
        if current == self._handler:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(self.signum, previous)  # type: ignore[arg-type]
        else:
            self.logger.warning("%s handler was replaced by %r since hotfix installed its own; leaving it",
                                _signal_name(self.signum), current)
        self._installed = False
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._quit = True
        fd, self._wfd = self._wfd, -1
        if fd >= 0:
            os.close(fd)  # the thread reads EOF, finishes a scan in progress, closes its end
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(10.0)

    def __enter__(self) -> SignalHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self._installed else "uninstalled"
        return f"<hotfix.SignalHandle {_signal_name(self.signum)} {state} scans={self.scans}>"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"cannot {what} from thread {threading.current_thread().name!r}: Python only allows signal"
            " handlers to be set from the main thread; call it there (for example at startup)")


def install_signal_handler(
    signum: int | None = None,
    *,
    prefixes: str | Iterable[str] | None = None,
    logger: logging.Logger | None = None,
    on_report: Callable[[Report], object] | None = None,
    on_scan: Callable[[list[Report]], object] | None = None,
) -> SignalHandle:
    """On ``signum`` (default ``SIGUSR1``), log a dry-run report of every stale module.

    The handler only wakes a daemon thread, which runs ``stale_modules(prefixes)``,
    logs each report (logger ``hotfix.signal`` unless ``logger`` is given) and
    calls ``on_report(report)`` for each and ``on_scan(reports)`` once per
    scan. Nothing is applied. Must be called from the main thread; replaces
    the current handler for ``signum`` until ``uninstall()``.
    """
    if signum is None:
        signum = getattr(signal, "SIGUSR1", None)
        if signum is None:
            raise ValueError("this platform has no SIGUSR1; pass the signal number to use")
    _require_main_thread("install a hotfix signal handler")
    handle = SignalHandle(int(signum), normalize_prefixes(prefixes), logger or _log, on_report, on_scan)
    handle._install()
    handle.logger.info("%s now logs a dry run of every stale module (pid %d)", _signal_name(signum), os.getpid())
    return handle
