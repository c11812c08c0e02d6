"""asyncio support: event-loop threads as workers, and async units of work.

Two things, for two needs.

**The loop as a worker** (``asyncio_worker``). ``async with
safepoints.asyncio_worker("web"):`` inside a coroutine (or ``with
safepoints.asyncio_worker(loop):`` around ``loop.run_forever()`` in the
thread that runs it) registers the loop's thread as a worker and remembers
the loop. When a pause starts and the loop thread is not already at a
safepoint, the pauser calls ``loop.call_soon_threadsafe(safepoints.checkpoint)``.
That wakes a loop that is blocked in ``select()`` with nothing to do, and the
loop thread parks inside that callback, i.e. *between* callbacks. So a pause
waits for the callback running when it starts (plus any callbacks already
queued ahead of the checkpoint) and no callback or task step runs while the
pause is held. No private asyncio API is used and the loop needs no special
policy. A coroutine that awaits across the swap continues in the new code.

**Async units of work** (``async_critical``). ``async with
safepoints.async_critical():`` around one request (or job) in a coroutine
makes that request see one version of the code: all old or all new.

* While units are in flight on a loop, a pause does not park that loop: it
  keeps running so that they can finish. When the loop's last unit ends
  while a pause is pending, the loop parks between callbacks (if it is also
  registered as a worker: ``asyncio_worker``, or ``hotfix run``'s automatic
  registration) or simply leaves the pause's list (if the units were its only
  registration: code outside units is then not paused, as for threads).
* A unit that *starts* while a pause is pending awaits (the loop thread is
  not blocked, other callbacks run) until the pause ends or times out, then
  starts, entirely in the new code. A held unit that is cancelled never
  starts and leaves nothing behind.
* A pause that times out raises ``PauseTimeout`` whose ``late`` entry for the
  loop's thread has ``loop`` (the loop's class and ``id()``) and ``units``
  (how many were in flight); held units are released as the pause ends.
* The name ``async_critical``: it is ``critical()`` for coroutines (a pause
  waits for the block, a block entered during a pause waits for the pause),
  except that it waits by awaiting instead of blocking the thread, and that
  it is per task instead of per thread.

Details and the decisions behind them:

* Nesting: a unit entered while the same task is already inside one (or a
  task started from inside a unit, which inherits its context) counts once,
  with the outermost, and is never held (holding it would wait for the very
  pause that waits for its outer unit). A task that outlives the unit it was
  started in is outside any unit afterwards.
* Several loops: units count per loop thread; a pause waits for every loop's
  units and parks each loop separately.
* A pause requested inside a unit, on the loop's own thread or in another
  thread running in the unit's context (``asyncio.to_thread``, or
  ``run_in_executor`` with ``contextvars.copy_context().run``), does not wait
  for that unit (it would wait for itself); the unit counts again when the
  pause ends. A pause requested on a loop's thread cannot wait for any of
  that loop's units either (the loop is not running while the pausing code
  runs): the pause holder's thread is never waited for, so those units are
  not waited for and may see the swap between two awaits. Request pauses
  from another thread (hotfix's admin app runs its work with
  ``asyncio.to_thread``).
* A loop closed with units in flight (its tasks never finished) is forgotten
  at the next pause or ``statistics()``: it can never run again. A loop that
  is stopped but not closed with units in flight makes pauses time out
  naming it, as a thread stuck in ``critical()`` does.
* After ``fork()`` the child keeps the forking thread's units and loop; units
  held by a pause that did not survive the fork find it gone within 0.5 s.
* Cost: entering and leaving a unit take the safepoints lock twice and set a
  context variable; ``checkpoint()``'s fast path is unchanged.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio is imported when a loop registers, not with safepoints
    import asyncio
    from contextvars import Token

from ._core import (
    _HOLDER_CHECK,
    _current_unit,
    _register,
    _Unit,
    _unit_check_holder,
    _unit_enter,
    _unit_exit,
    _unit_forget_held,
    _unregister,
    _wake_futures,
)

__all__ = ["async_critical", "asyncio_worker"]


class asyncio_worker:  # lower-case: used like a function, ``async with asyncio_worker():``
    """Register the event loop's thread as a worker: ``async with`` inside it, or ``with`` around running it.

    Inside a coroutine running on the loop, around the loop's work::

        async def main():
            async with safepoints.asyncio_worker(name="web"):
                await serve_forever()

    or in the thread that runs the loop (``loop`` required)::

        with safepoints.asyncio_worker(loop, name="web"):
            loop.run_forever()

    While registered, a pause parks the loop between two callbacks (see the
    module notes). ``loop``, if given to ``async with``, must be the running
    loop (it is only checked); ``name`` defaults to the thread's name.
    Reentrant and combinable with an enclosing ``worker()`` in the same
    thread; entered while a pause is pending, it parks until the pause ends.
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
        self._enter(running)

    def __enter__(self) -> None:
        loop = self._loop
        if loop is None:
            raise TypeError("with asyncio_worker(loop): give the loop this thread is about to run")
        import asyncio

        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop.is_running() and running is not loop:
            raise ValueError("asyncio_worker(loop): that loop is running in another thread")
        self._enter(loop)

    def _enter(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._ident is not None:
            raise RuntimeError("this asyncio_worker() is already entered")
        self._ident = _register(self._name, loop=loop)
        self._running = loop

    def _exit(self) -> None:
        ident, self._ident = self._ident, None
        loop, self._running = self._running, None
        if ident is not None:
            _unregister(ident, loop=loop)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()


class async_critical:  # lower-case: used like a function, ``async with async_critical():``
    """An async unit of work: ``async with safepoints.async_critical():`` around one request.

    A pause waits until every unit in flight on the loop has ended (the loop
    keeps running meanwhile), and a unit that starts while a pause is pending
    awaits until it ends: each unit runs entirely in the old code or entirely
    in the new. Use it in a coroutine running on an event loop; ``name``
    names the loop's thread in ``statistics()`` and ``PauseTimeout`` when the
    unit registers it (default: the thread's name). Nested units in one task
    count once. Keep units short: a pause can only wait ``timeout`` seconds
    for them. See the module notes for several loops, pauses from inside a
    unit, closed loops and fork.
    """

    __slots__ = ("_name", "_token", "_unit")

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self._unit: _Unit | None = None  # None: not entered; _NESTED: inside an outer unit
        self._token: Token[_Unit | None] | None = None

    async def __aenter__(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._unit is not None:
            raise RuntimeError("this async_critical() is already entered; call async_critical() again")
        outer = _current_unit.get()
        if outer is not None and outer.active and outer.loop is loop:
            self._unit = _NESTED
            return
        unit = _Unit(loop, self._name)
        while True:
            held = _unit_enter(unit)
            if held is None:
                break
            # woken when the pause ends; meanwhile every _HOLDER_CHECK seconds, to notice a
            # pause whose holder died (or that did not survive a fork)
            timer = loop.call_later(_HOLDER_CHECK, _wake_futures, [held])
            try:
                await held
            finally:
                timer.cancel()
                _unit_forget_held(loop, held)
            _unit_check_holder()
        self._token = _current_unit.set(unit)
        self._unit = unit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # never suspends: also runs to the end when a coroutine is closed by the GC
        unit, self._unit = self._unit, None
        token, self._token = self._token, None
        if unit is None or unit is _NESTED:
            return
        if token is not None:
            try:
                _current_unit.reset(token)
            except (ValueError, RuntimeError):  # exited in another context (a closed coroutine)
                pass
        _unit_exit(unit)


_NESTED: _Unit = object.__new__(_Unit)  # marks a nested async_critical(): nothing to undo
