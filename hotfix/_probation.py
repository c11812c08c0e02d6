"""Probation: watch patched code for exceptions for a while after a patch.

On Python 3.12+ we use ``sys.monitoring``: ``PY_UNWIND`` (an exception
leaving a frame) can only be enabled globally, so the callback fires for
any frame an exception unwinds, in any thread, and filters on the patched
code objects (and the code nested in them). The cost is one callback per
unwinding frame, only while an exception propagates, only during
probation; calls that do not raise pay nothing. When probation ends the
event is switched off and the tool id freed: nothing is left behind.

On Python 3.11 there is no ``sys.monitoring``; we watch uncaught exceptions
(``threading.excepthook``/``sys.excepthook``) whose traceback passes
through patched code. An exception that the caller catches is not seen
there; the README lists this under caveats. Checks run on every version.

Ignored: ``StopIteration``, ``StopAsyncIteration``, ``GeneratorExit``
(normal control flow) and whatever the caller lists in ``expected``.
"""

from __future__ import annotations

import sys
import threading
import traceback
import types
from collections.abc import Iterable

_CONTROL_FLOW = (StopIteration, StopAsyncIteration, GeneratorExit)
_TOOL_NAME = "hotfix-probation"


class ProbationWatch:
    """Context manager: records the first unexpected exception escaping watched code."""

    def __init__(self, codes: Iterable[types.CodeType], expected: tuple[type[BaseException], ...] = ()) -> None:
        self.codes = frozenset(codes)
        self.ignore = _CONTROL_FLOW + tuple(expected)
        self.failed = threading.Event()
        self.failure: BaseException | None = None
        self.where: str | None = None
        self.formatted: str | None = None
        self._tool: int | None = None
        self._old_hooks: tuple | None = None
        self.mechanism = "sys.monitoring" if hasattr(sys, "monitoring") else "excepthook"

    def _record(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, self.ignore) or self.failed.is_set():
            return
        self.failure = exc
        self.where = where
        self.formatted = "".join(traceback.format_exception(exc))
        self.failed.set()

    # -- sys.monitoring (3.12+)

    def _on_unwind(self, code: types.CodeType, offset: int, exc: BaseException) -> None:
        if code not in self.codes:
            return
        self._record(exc, f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})")

    def _start_monitoring(self) -> None:
        mon = sys.monitoring
        for tool in (4, 3):
            try:
                mon.use_tool_id(tool, _TOOL_NAME)
            except ValueError:
                continue
            self._tool = tool
            break
        else:
            self.mechanism = "excepthook"  # every tool id taken: fall back
            self._start_hooks()
            return
        mon.register_callback(self._tool, mon.events.PY_UNWIND, self._on_unwind)
        mon.set_events(self._tool, mon.events.PY_UNWIND)

    def _stop_monitoring(self) -> None:
        mon = sys.monitoring
        mon.set_events(self._tool, 0)
        mon.register_callback(self._tool, mon.events.PY_UNWIND, None)
        mon.free_tool_id(self._tool)
        self._tool = None

    # -- excepthooks (3.11, or no free tool id)

    def _start_hooks(self) -> None:
        old_thread_hook, old_sys_hook = threading.excepthook, sys.excepthook

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            self._check_tb(args.exc_value, args.exc_traceback)
            old_thread_hook(args)

        def sys_hook(tp, value, tb) -> None:  # noqa: ANN001 - sys.excepthook protocol
            self._check_tb(value, tb)
            old_sys_hook(tp, value, tb)

        self._old_hooks = (old_thread_hook, old_sys_hook)
        threading.excepthook, sys.excepthook = thread_hook, sys_hook

    def _check_tb(self, exc: BaseException | None, tb: types.TracebackType | None) -> None:
        while tb is not None and exc is not None:
            if tb.tb_frame.f_code in self.codes:
                code = tb.tb_frame.f_code
                self._record(exc, f"{code.co_qualname} ({code.co_filename}:{tb.tb_lineno})")
                return
            tb = tb.tb_next

    def _stop_hooks(self) -> None:
        if self._old_hooks is not None:
            threading.excepthook, sys.excepthook = self._old_hooks
            self._old_hooks = None

    # -- context manager

    def __enter__(self) -> ProbationWatch:
        if self.mechanism == "sys.monitoring":
            self._start_monitoring()
        else:
            self._start_hooks()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tool is not None:
            self._stop_monitoring()
        self._stop_hooks()

    def wait(self, seconds: float) -> bool:
        """Wait out the window; True when it passed without a failure."""
        if seconds > 0:
            self.failed.wait(seconds)
        return not self.failed.is_set()
