"""Exceptions raised by safepoints."""

from __future__ import annotations

from ._records import WorkerInfo


class PauseTimeout(Exception):
    """A pause could not be acquired within its timeout.

    Raised by :func:`safepoints.pause` when some registered workers did not
    reach a safepoint (``checkpoint()``, ``idle()``, the end of a
    ``critical()`` block) before the timeout, or when another thread's pause
    did not end in time (then ``late`` is empty and ``holder`` is that
    thread's ident). Nothing was changed: every worker that had parked was
    released before this was raised, so it is safe to simply retry.

    What to do: read the message (it names each late thread and the
    ``file:line`` it was executing), then make that code call
    ``safepoints.checkpoint()`` more often, wrap its blocking waits in
    ``safepoints.idle()``, keep ``critical()`` blocks short, or retry with a
    longer timeout.

    Attributes:
        late: one :class:`~safepoints.WorkerInfo` per worker that was not at a
            safepoint when the timeout expired.
        holder: ident of the thread whose pause blocked this one, or ``None``.
    """

    late: tuple[WorkerInfo, ...]
    holder: int | None

    def __init__(
        self, message: str, late: tuple[WorkerInfo, ...] = (), holder: int | None = None
    ) -> None:
        super().__init__(message)
        self.late = tuple(late)
        self.holder = holder

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.late, self.holder))
