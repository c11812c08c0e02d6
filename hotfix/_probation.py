"""Probation: watch patched code for exceptions for a while after a patch.

On Python 3.12+ we use ``sys.monitoring``: ``PY_UNWIND`` (an exception
leaving a frame) can only be enabled globally, so the callback fires for
any frame an exception unwinds, in any thread, and filters on the patched
code objects (and the code nested in them). The cost is one callback per
unwinding frame, only while an exception propagates, only during
probation; calls that do not raise pay nothing. When probation ends the
event is switched off and the tool id freed: nothing is left behind.

On Python 3.11 there is no ``sys.monitoring`` and no way to trace threads
that are already running. There, during probation only, each patched
function runs an *instrumented twin* of its new code: the same source
compiled with the body wrapped in ``try/except BaseException`` that reports
to a probe and re-raises (same line numbers, same closure variables). When
probation ends the verified code object goes back in, so nothing is left
behind; a frame still running the twin finishes with it. New definitions
(added in the patch) are watched through ``threading.excepthook`` and
``sys.excepthook``, which see only exceptions that reach a thread's top.
Checks run on every version.

Ignored: ``StopIteration``, ``StopAsyncIteration``, ``GeneratorExit``
(normal control flow) and whatever the caller lists in ``expected``.
"""

from __future__ import annotations

import ast
import copy
import os
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Iterable
from typing import Any

from verification import CodeSet

_PLACEHOLDER = "__hotfix_probe_placeholder__"
_active: ProbationWatch | None = None  # the watch the twins report to (one transaction at a time)
_watching: ProbationWatch | None = None  # the watch in effect, if any


def _probe(exc: BaseException) -> None:
    """Called by an instrumented twin's handler. Bound into the twin as a constant, never looked
    up by name: a frame still running a twin after probation ends calls it harmlessly."""
    watch = _active
    if watch is not None:
        code = sys._getframe(1).f_code
        watch._record(exc, f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})")

_CONTROL_FLOW = (StopIteration, StopAsyncIteration, GeneratorExit)
_TOOL_NAME = "hotfix-probation"


class ProbationWatch:
    """Context manager: records the first unexpected exception escaping watched code."""

    def __init__(self, codes: Iterable[types.CodeType], expected: tuple[type[BaseException], ...] = (),
                 twins: Iterable[tuple[types.FunctionType, types.CodeType, types.CodeType]] = (),
                 failed: threading.Event | None = None) -> None:
        self.codes = CodeSet(codes)  # by identity: an identical function elsewhere is not ours
        # (function, verified code, instrumented twin): used where sys.monitoring is missing
        self.twins = list(twins)
        self.ignore = _CONTROL_FLOW + tuple(expected)
        self.failed = failed if failed is not None else threading.Event()  # may be shared: a doorbell
        self.failure: BaseException | None = None
        self.where: str | None = None
        self.formatted: str | None = None
        self._tool: int | None = None
        self._old_hooks: tuple | None = None
        self.mechanism = "sys.monitoring" if hasattr(sys, "monitoring") else "excepthook"

    def _record(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, self.ignore) or self.failure is not None:
            return
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:  # name the line that raised, not just the function
            code = tb.tb_frame.f_code
            where = f"{code.co_qualname} ({code.co_filename}:{tb.tb_lineno})"
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
        mon = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
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
        mon = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
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

        def sys_hook(tp, value, tb) -> None:  # sys.excepthook protocol
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

    # -- instrumented twins (3.11)

    def _start_twins(self) -> None:
        global _active
        _active = self
        for func, verified, twin in self.twins:
            if func.__code__ is verified:
                func.__code__ = twin

    def _stop_twins(self) -> None:
        global _active
        for func, verified, twin in self.twins:
            if func.__code__ is twin:
                func.__code__ = verified
        if _active is self:
            _active = None

    # -- context manager

    def __enter__(self) -> ProbationWatch:
        global _watching
        _watching = self
        if self.mechanism == "sys.monitoring":
            self._start_monitoring()
        else:
            self._start_hooks()
            self._start_twins()
            self.mechanism = "instrumented twins + excepthook"
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _watching
        if self._tool is not None:
            self._stop_monitoring()
        self._stop_twins()
        self._stop_hooks()
        if _watching is self:
            _watching = None

    def wait(self, seconds: float) -> bool:
        """Wait out the window (or until the doorbell rings); True when no failure was recorded."""
        if seconds > 0 and self.failure is None:
            self.failed.wait(seconds)
        return self.failure is None


def instrumented_twin(node: ast.FunctionDef | ast.AsyncFunctionDef, scope: str, path: str,
                      flags: int, verified: types.CodeType) -> types.CodeType | None:
    """The function's code compiled with its body wrapped to report escaping exceptions.

    The definition is rebuilt inside empty classes named like its enclosing
    scope so the qualified name and the ``__class__`` cell come out the
    same; decorators are dropped (they are not part of the function's code).
    Returns ``None`` when the twin would not be interchangeable.
    """
    fn = copy.deepcopy(node)
    fn.decorator_list = []
    exc_name = "_hotfix_probation_exc"
    handler = ast.ExceptHandler(
        type=ast.Name("BaseException", ast.Load()),
        name=exc_name,
        body=[ast.Expr(ast.Call(ast.Constant(_PLACEHOLDER), [ast.Name(exc_name, ast.Load())], [])),
              ast.Raise()],
    )
    wrapped = ast.Try(body=fn.body, handlers=[handler], orelse=[], finalbody=[])
    ast.copy_location(wrapped, fn.body[0])
    for n in ast.walk(handler):
        ast.copy_location(n, fn.body[-1])
    fn.body = [wrapped]
    stmt: ast.stmt = fn
    for cls in reversed([p for p in scope.split(".") if p]):
        extra: dict[str, Any] = {"type_params": []} if sys.version_info >= (3, 12) else {}
        stmt = ast.copy_location(ast.ClassDef(name=cls, bases=[], keywords=[], body=[stmt], decorator_list=[], **extra), node)
    module = ast.fix_missing_locations(ast.Module(body=[stmt], type_ignores=[]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "'str' object is not callable": replaced below
            code = compile(module, path, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    stack = [code]
    while stack:
        c = stack.pop()
        if c.co_qualname == verified.co_qualname and c.co_name == verified.co_name and c is not code:
            if c.co_freevars != verified.co_freevars:
                return None
            # the probe goes in as a constant: no global name to look up (or to vanish mid-call)
            return c.replace(co_consts=tuple(_probe if type(k) is str and k == _PLACEHOLDER else k
                                             for k in c.co_consts))
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return None


def _reset_after_fork_in_child() -> None:
    """A watch in effect when the process forked belongs to the parent's transaction: end it in the child
    (the sys.monitoring tool id, the excepthooks and the twins would otherwise stay for good)."""
    watch = _watching
    if watch is not None:
        watch.__exit__(None, None, None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork_in_child)
