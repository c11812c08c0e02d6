"""Value objects returned by the safepoints API (attrs records)."""

from __future__ import annotations

import attrs

#: The states a registered worker can be in, as reported by :class:`WorkerInfo`.
WORKER_STATES = ("running", "parked", "idle", "critical")


@attrs.frozen
class WorkerInfo:
    """A snapshot of one registered worker thread.

    ``state`` is one of ``"running"`` (executing code, not at a safepoint),
    ``"parked"`` (blocked in a safepoint until the pause ends), ``"idle"``
    (inside :func:`safepoints.idle`: blocked in a wait that counts as parked)
    or ``"critical"`` (inside :func:`safepoints.critical`, or an event loop
    with async units of work in flight: a pause waits for them to end). ``where`` is ``"file:line in function"`` of the
    innermost frame outside the safepoints package, or ``None`` when the
    thread has no Python frame.

    For an event-loop thread (registered with :func:`safepoints.asyncio_worker`
    or by an async unit of work), ``loop`` names the loop (its class and
    ``id()`` in hex, e.g. ``"_UnixSelectorEventLoop 0x7f3a5c1d2e10"``) and
    ``units`` counts the async units of work (:func:`safepoints.async_critical`)
    in flight on it. Otherwise ``loop`` is ``None`` and ``units`` is 0.
    """

    name: str
    thread_id: int
    native_id: int | None
    state: str
    where: str | None
    loop: str | None = None
    units: int = 0


@attrs.frozen
class Statistics:
    """What :func:`safepoints.statistics` reports: who is registered and the pause history.

    ``workers`` lists every registered, live worker in registration order;
    ``running``/``parked``/``idle``/``critical`` count them by state.
    ``pause_holder`` is the ident of the thread holding the pause (or ``None``).
    ``pauses`` counts completed pauses, ``pause_timeouts`` the ones that raised
    :class:`~safepoints.PauseTimeout`; the stall figures cover completed,
    non-nested pauses (time from request to release).
    """

    workers: tuple[WorkerInfo, ...]
    pause_pending: bool
    pause_holder: int | None
    running: int
    parked: int
    idle: int
    critical: int
    pauses: int
    pause_timeouts: int
    last_stall_seconds: float | None
    max_stall_seconds: float | None


#: How a pause held a registered worker, as reported by :class:`HeldWorker`.
HELD_HOW = ("waited", "idle", "parked", "arrived")


@attrs.frozen
class HeldWorker:
    """One registered worker a pause held.

    ``how`` is ``"waited"`` (running or inside ``critical()`` when the pause
    was requested: the pause waited for it to reach a safepoint, then held
    it), ``"idle"`` (inside :func:`safepoints.idle` when the pause was
    acquired: it would have parked had its wait ended), ``"parked"`` (idle
    when the pause was requested, then left its wait and parked) or
    ``"arrived"`` (registered while the pause was pending or held: parked on
    entry). ``unit`` is true for a
    registration of one unit of work (``worker(..., unit=True)``: a request or a
    task), false for a long-lived worker. Each async unit of work
    (:func:`safepoints.async_critical`) the pause waited for (``"waited"``: in
    flight when it was requested) or held on entry (``"arrived"``: it awaited
    the end of the pause) has its own entry with ``unit`` true and the ident
    of its loop's thread.
    """

    name: str
    thread_id: int
    how: str
    unit: bool = False


@attrs.define
class PauseInfo:
    """What ``with safepoints.pause() as info`` yields.

    ``acquire_seconds``: time from calling ``pause()`` until every worker was
    parked or idle (includes waiting for another thread's pause to end).
    ``workers``: how many registered workers (besides the caller) were held.
    ``nested``: the caller already held the pause, so this block was a no-op.
    ``stall_seconds``: ``None`` inside the block; after it exits, how long
    workers were held, from the moment this pause asked them to park until it
    released them (for a nested block: the duration of the inner block).
    ``held``: the registered workers this pause held (besides the caller):
    inside the block those held when it was acquired, after it exits also
    those that registered meanwhile (``how="arrived"``).
    Only ``stall_seconds`` and ``held`` ever change, and only safepoints sets them.
    """

    acquire_seconds: float = attrs.field(on_setattr=attrs.setters.frozen)
    workers: int = attrs.field(on_setattr=attrs.setters.frozen)
    nested: bool = attrs.field(default=False, on_setattr=attrs.setters.frozen)
    stall_seconds: float | None = None
    held: tuple[HeldWorker, ...] = ()
