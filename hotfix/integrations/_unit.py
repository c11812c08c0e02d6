"""A unit of work (a request, a task, a job) as a safepoints section, for threads nobody registered.

While a unit runs, its thread is a registered worker inside ``critical()``:
a pause waits for units in flight and holds new ones (they park on entry)
for the swap. Between units the thread is not registered at all, so an idle
framework thread never delays a pause. Nested units (a Django handler under
gunicorn's middleware) count once.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from types import TracebackType

import safepoints

from .._run import _process

_local = threading.local()


class UnitOfWork(AbstractContextManager[None]):
    """``with UnitOfWork("request"):`` around one request or task. Also ``enter()``/``exit()``."""

    __slots__ = ("_blocks", "_name")

    def __init__(self, name: str = "unit-of-work") -> None:
        self._name = name
        self._blocks: tuple[AbstractContextManager[None], AbstractContextManager[None]] | None = None

    def enter(self) -> None:
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        if depth:
            return
        registration = safepoints.worker(f"{self._name} ({threading.current_thread().name})", unit=True)
        registration.__enter__()
        section = safepoints.critical()
        try:
            section.__enter__()
        except BaseException:
            registration.__exit__(None, None, None)
            _local.depth = depth
            raise
        self._blocks = (registration, section)
        _process.unit_started()

    def exit(self) -> None:
        _local.depth = getattr(_local, "depth", 1) - 1
        blocks, self._blocks = self._blocks, None
        if blocks is None:
            return
        registration, section = blocks
        try:
            section.__exit__(None, None, None)  # a safepoint: parks here if a pause waits
        finally:
            registration.__exit__(None, None, None)
            _process.unit_finished()

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.exit()
