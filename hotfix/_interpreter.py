"""Does this interpreter behave as hotfix assumes? Checked once, at ``install()``.

hotfix relies on a few CPython behaviours that no language specification
promises. This module names them in one place. On an interpreter it was
not built for (3.14, 3.15, another implementation), it tests them by
behaviour, not by version number:

* ``function.__code__`` can be assigned, and the next call runs the new
  code. A new default takes effect the same way.
* ``types.CellType`` can be created and put in a closure; an added
  method's zero-argument ``super()`` needs this.
* ``code.replace()`` keeps ``co_qualname``, and code objects compare by
  content.
* ``sys._current_frames()`` exposes each thread's frame and its
  ``f_code``. The consistency check reads which code a running thread is
  inside.
* ``sys.monitoring`` has ``PY_UNWIND`` on 3.12+. Probation watches
  exceptions with it.

When a check fails, ``install()`` raises ``UnsupportedInterpreter``, which
names each failed assumption. The alternative is to patch and misbehave
later.

``install()`` runs the checks, so this module imports nothing costly; a
``Problem`` (an ``attrs`` value object, in ``hotfix._exceptions``) is made
only when an assumption fails.
"""

from __future__ import annotations

import sys
import threading
import types

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: install() imports only what it uses
if TYPE_CHECKING:
    from typing import Any

    from ._exceptions import Problem

SUPPORTED = ((3, 11), (3, 12), (3, 13))  # tested in CI; later versions are probed by behaviour


def __getattr__(name: str) -> Any:
    if name == "Problem":
        from ._exceptions import Problem

        return Problem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _problem(assumption: str, observed: str) -> Problem:
    from ._exceptions import Problem

    return Problem(assumption, observed)


class UnsupportedInterpreter(RuntimeError):
    """``install()`` refused: this interpreter does not behave as hotfix assumes.

    ``problems`` names every assumption that failed. The fix is to run a
    supported CPython (3.11–3.13), or a hotfix release that supports this
    one.
    """

    def __init__(self, version: str, problems: tuple[Problem, ...]) -> None:
        self.version = version
        self.problems = problems
        listed = "; ".join(f"{p.assumption} ({p.observed})" for p in problems)
        super().__init__(f"hotfix does not support this interpreter ({version}): {listed}; "
                         "run CPython 3.11-3.13 or a hotfix release that supports it")


def _probe_code_swap() -> Problem | None:
    def target(a: int = 1) -> int:
        return a

    def replacement(a: int = 1) -> int:
        return a + 100

    try:
        target.__code__ = replacement.__code__
        target.__defaults__ = (2,)
        got = target()
    except Exception as exc:  # any failure means the assumption does not hold
        return _problem("function.__code__ is writable", repr(exc))
    if got != 102:
        return _problem("a call after a __code__ write runs the new code", f"returned {got!r}, not 102")
    return None


def _probe_cells() -> Problem | None:
    class Base:
        def who(self) -> str:
            return "base"

    class Child(Base):
        def who(self) -> str:
            return "child+" + super().who()

    try:
        cell = types.CellType(Child)
        method = types.FunctionType(Child.who.__code__, Child.who.__globals__, "who", None, (cell,))
        got = method(Child())
    except Exception as exc:
        return _problem("a __class__ cell can be created for zero-argument super()", repr(exc))
    if got != "child+base":
        return _problem("zero-argument super() through a new __class__ cell", f"returned {got!r}")
    return None


def _probe_code_objects() -> Problem | None:
    def f() -> int:
        return 1

    code = f.__code__
    try:
        copy = code.replace(co_name=code.co_name)
    except Exception as exc:
        return _problem("code.replace() works", repr(exc))
    if getattr(copy, "co_qualname", None) != code.co_qualname or copy != code:
        return _problem("code.replace() keeps co_qualname and equality", "differs")
    return None


def _probe_frames() -> Problem | None:
    frames = getattr(sys, "_current_frames", None)
    if frames is None:
        return _problem("sys._current_frames() exists", "missing")
    frame = frames().get(threading.get_ident())
    if frame is None or not isinstance(getattr(frame, "f_code", None), types.CodeType):
        return _problem("sys._current_frames() gives each thread's frame with f_code", repr(frame))
    return None


def _probe_monitoring() -> Problem | None:
    if sys.version_info < (3, 12):
        return None
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None or not hasattr(monitoring.events, "PY_UNWIND"):
        return _problem("sys.monitoring with PY_UNWIND (probation's exception watch)", "missing")
    return None


PROBES = (_probe_code_swap, _probe_cells, _probe_code_objects, _probe_frames, _probe_monitoring)


def problems() -> tuple[Problem, ...]:
    """Every failed assumption on this interpreter (empty when hotfix can run here)."""
    found: list[Problem] = []
    if sys.implementation.name != "cpython":
        found.append(_problem("the interpreter is CPython", sys.implementation.name))
    if sys.version_info[:2] < SUPPORTED[0]:
        found.append(_problem("Python 3.11 or later", sys.version.split()[0]))
    for probe in PROBES:
        problem = probe()
        if problem is not None:
            found.append(problem)
    return tuple(found)


def check() -> None:
    """Raise ``UnsupportedInterpreter`` unless every assumption holds (cheap: a few microseconds)."""
    found = problems()
    if found:
        raise UnsupportedInterpreter(sys.version.split()[0], found)
