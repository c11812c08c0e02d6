"""Step events: the seam through which metrics, tracing and tests see a transaction's steps.

Every step of ``apply`` and ``rollback`` (``hotfix._transaction.APPLY_STEPS``
and ``ROLLBACK_STEPS``) and every audit write goes through ``step()`` here:

* ``subscribe(observer)`` registers ``observer(event)`` for every ``StepEvent``
  (``phase`` ``"enter"`` at the start of a step, ``"exit"`` at its end with
  ``seconds`` and, if it raised, ``error``; ``"end"`` once per transaction
  with ``reason``/``state``). Observers run in the transaction's thread,
  inside the pause for the steps that run under it: keep them quick. An
  observer that raises is logged and ignored; it cannot change an outcome.
* ``fault_hook`` (tests only) is called with ``"<kind>:<step>"`` before a
  step runs and may raise, to prove every step fails cleanly
  (``tests/hotfix/test_faults.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import attrs

_log = logging.getLogger("hotfix")


@attrs.frozen
class StepEvent:
    kind: str  # "apply" | "rollback"
    step: str  # one of the kind's steps, or "end"
    phase: str  # "enter" | "exit" | "end"
    patch_id: str | None
    seconds: float | None = None  # exit: how long the step took
    error: str | None = None  # exit: the exception type, if the step raised
    fields: Mapping[str, object] = attrs.field(factory=dict)  # end: reason, state, modules


Observer = Callable[[StepEvent], object]

#: Test hook (fault injection): called with ``"<kind>:<step>"`` before each step; may raise.
fault_hook: Callable[[str], None] | None = None

_observers: tuple[Observer, ...] = ()
_lock = threading.Lock()


def subscribe(observer: Observer) -> Callable[[], None]:
    """Call ``observer`` for every step event from now on; returns the function that unsubscribes."""
    global _observers
    with _lock:
        _observers = (*_observers, observer)

    def unsubscribe() -> None:
        global _observers
        with _lock:
            _observers = tuple(o for o in _observers if o is not observer)

    return unsubscribe


def emit(event: StepEvent) -> None:
    for observer in _observers:
        try:
            observer(event)
        except Exception:  # an observer must never change an outcome
            _log.exception("hotfix step observer %r failed", observer)


@contextmanager
def step(kind: str, name: str, patch_id: str | None) -> Iterator[None]:
    """One step: the fault hook, then ``enter``, the body, ``exit``."""
    hook = fault_hook
    if hook is not None:
        hook(f"{kind}:{name}")
    if _observers:
        emit(StepEvent(kind, name, "enter", patch_id))
    started = time.perf_counter()
    error: str | None = None
    try:
        yield
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        if _observers:
            emit(StepEvent(kind, name, "exit", patch_id, time.perf_counter() - started, error))


def end(kind: str, patch_id: str | None, **fields: object) -> None:
    if _observers:
        emit(StepEvent(kind, "end", "end", patch_id, fields=fields))


def _reset_after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork_in_child)
