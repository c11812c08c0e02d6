"""asyncio support: an event loop thread as a safepoints worker.

Design: ``async with safepoints.asyncio_worker("web"):`` inside a coroutine
registers the loop's thread as a worker and remembers the loop. When a pause
starts and the loop thread is not already at a safepoint, the pauser calls
``loop.call_soon_threadsafe(safepoints.checkpoint)``. That wakes a loop that
is blocked in ``select()`` with nothing to do, and the loop thread parks
inside that callback, i.e. *between* callbacks. So a pause waits for the
callback running when it starts (plus any callbacks already queued ahead of
the checkpoint) and no callback or task step runs while the pause is held.
No private asyncio API is used and the loop needs no special policy.

Everything else about workers applies to the loop thread: a coroutine may
call ``safepoints.checkpoint()`` (it parks the whole loop thread), and
``critical()`` is per thread, so a ``critical()`` block that spans an
``await`` delays pauses until it ends, whichever task is running meanwhile.
While the pause is held the loop does not run, so the pausing thread must
not wait for that loop (e.g. ``run_coroutine_threadsafe(...).result()``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio is imported when a loop registers, not with safepoints
    import asyncio

from ._core import _register, _unregister

__all__ = ["asyncio_worker"]


class asyncio_worker:  # lower-case: used like a function, ``async with asyncio_worker():``
    """Async context manager: register the running event loop's thread as a worker.

    Use it inside a coroutine running on the loop, around the loop's work::

        async def main():
            async with safepoints.asyncio_worker("web"):
                await serve_forever()

    While registered, a pause parks the loop between two callbacks (see the
    module notes). ``loop``, if given, must be the running loop (it is only
    checked); ``name`` defaults to the thread's name. Reentrant and
    combinable with an enclosing ``worker()`` in the same thread; entered
    while a pause is pending, it parks until the pause ends.
    """

    __slots__ = ("_ident", "_loop", "_name", "_running")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, name: str | None = None
    ) -> None:
        self._loop = loop
        self._name = name
        self._ident: int | None = None
        self._running: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> None:
        import asyncio

        running = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not running:
            raise ValueError(
                "asyncio_worker(loop) must be entered from a coroutine running on that loop"
            )
        if self._ident is not None:
            raise RuntimeError("this asyncio_worker() is already entered")
        self._ident = _register(self._name, loop=running)
        self._running = running

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ident, self._ident = self._ident, None
        loop, self._running = self._running, None
        if ident is not None:
            _unregister(ident, loop=loop)
