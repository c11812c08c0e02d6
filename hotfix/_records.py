"""What happened, as small frozen records: patches, rollbacks, step events."""

from __future__ import annotations

from typing import Any

import attrs

from ._outcomes import PatchStatus, Reason


@attrs.frozen
class SwapEvent:
    """One thing the swap did, named by qualified name."""

    module: str
    action: str  # code | defaults | annotations | doc | replace | define | run | remove | rebind | cache-clear
    qualname: str

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class WaitedThread:
    """An unregistered thread a transaction waited for: it was running code the patch replaces.

    It was not held: it kept running, and the swap waited (under the pause)
    until it had left that code. ``where`` is where it was first seen in
    the replaced code (``file:line in qualname``), ``seconds`` how long it
    took to leave it for good (a pool thread that takes the next job in the
    same code is still in it: the swap needs every such thread out at once).
    """

    name: str
    where: str
    seconds: float

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class Hold:
    """Who a transaction held under its pause, and who it merely waited for.

    ``workers``: names of the registered safepoints workers held (parked, or
    idle and unable to leave their wait). ``units``: units of work held
    (requests, tasks: ``hotfix.integrations``), of which ``units_in_flight``
    were running when the pause was requested (it waited for them to end)
    and the rest started during the pause (they waited for it on entry).
    ``seconds``: how long they were held, from the pause request to the
    release (``Patch.stall_seconds``). ``waited``: unregistered threads that
    were running replaced code; the swap waited ``wait_seconds`` in all for
    them to leave it (inside ``seconds``). Threads that are neither
    registered nor in a unit of work are never stopped.
    """

    workers: tuple[str, ...] = ()
    units: int = 0
    units_in_flight: int = 0
    seconds: float = 0.0
    waited: tuple[WaitedThread, ...] = ()
    wait_seconds: float = 0.0

    @property
    def held_anything(self) -> bool:
        return bool(self.workers or self.units)

    def to_dict(self) -> dict:
        return {"workers": list(self.workers), "units": self.units, "units_in_flight": self.units_in_flight,
                "seconds": self.seconds, "waited": [w.to_dict() for w in self.waited],
                "wait_seconds": self.wait_seconds}

    @classmethod
    def from_dict(cls, data: dict) -> Hold:
        """The inverse of ``to_dict`` (a CLI reading an endpoint's answer)."""
        return cls(tuple(data.get("workers") or ()), int(data.get("units") or 0),
                   int(data.get("units_in_flight") or 0), float(data.get("seconds") or 0.0),
                   tuple(WaitedThread(str(w.get("name")), str(w.get("where")), float(w.get("seconds") or 0.0))
                         for w in data.get("waited") or ()),
                   float(data.get("wait_seconds") or 0.0))

    def __str__(self) -> str:
        """One phrase for logs and the CLI; says "held" only for registered workers and units of work."""
        if self.held_anything:
            who = []
            if self.workers:
                who.append(f"{_count(len(self.workers), 'registered worker')} ({', '.join(self.workers)})")
            if self.units:
                who.append(_count(self.units, "unit") + " of work"
                           + (f" ({self.units_in_flight} in flight)" if self.units_in_flight else ""))
            text = f"held {' and '.join(who)} for {self.seconds:.6f}s"
        else:
            text = f"no registered workers or units of work (paused {self.seconds:.6f}s)"
        if self.waited:
            threads = ", ".join(f"{w.name} at {w.where}, {w.seconds:.3f}s" for w in self.waited)
            text += (f"; waited {self.wait_seconds:.3f}s for {_count(len(self.waited), 'unregistered thread')}"
                     f" to leave the replaced code ({threads})")
        return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def hold_of(patch: dict) -> Hold | None:
    """The ``Hold`` in an endpoint's patch document (``None`` from an endpoint that predates it)."""
    data = patch.get("hold")
    return Hold.from_dict(data) if isinstance(data, dict) else None


def hold_phrase(patch: dict) -> str:
    """``str(Hold)`` of an endpoint's patch document; from an older endpoint, the pause time only."""
    hold = hold_of(patch)
    return str(hold) if hold is not None else f"paused {float(patch.get('stall_seconds') or 0.0):.6f}s"


@attrs.frozen
class Patch:
    """The outcome of ``hotfix.apply``: what was applied and how long workers were held.

    ``stall_seconds`` is how long the pause lasted (registered workers and
    units of work held); ``hold`` says who was held and which unregistered
    threads were only waited for.
    """

    id: str
    status: PatchStatus = attrs.field(converter=PatchStatus)
    modules: tuple[str, ...]
    report: Any = attrs.field(repr=False)  # verification.Report (one module) or a tuple of them
    reports: tuple[Any, ...] = attrs.field(repr=False, default=())
    events: tuple[SwapEvent, ...] = attrs.field(repr=False, default=())
    stall_seconds: float = 0.0
    started_at: float = 0.0
    applied_at: float | None = None
    finished_at: float = 0.0
    probation_seconds: float = 0.0
    sha256: tuple[str, ...] = ()
    hold: Hold = attrs.field(factory=Hold)

    def to_dict(self) -> dict:
        return {
            "kind": "patch",
            "id": self.id,
            "status": self.status.value,
            "modules": list(self.modules),
            "sha256": list(self.sha256),
            "stall_seconds": self.stall_seconds,
            "hold": self.hold.to_dict(),
            "started_at": self.started_at,
            "applied_at": self.applied_at,
            "finished_at": self.finished_at,
            "probation_seconds": self.probation_seconds,
            "events": [e.to_dict() for e in self.events],
            "reports": [r.to_dict() for r in self.reports],
        }


@attrs.frozen
class Rollback:
    """A patch undone, by request (``reason="requested"``) or automatically."""

    patch_id: str
    modules: tuple[str, ...]
    reason: Reason = attrs.field(converter=Reason)  # REQUESTED, or why it was rolled back automatically
    detail: str
    stall_seconds: float
    at: float

    def to_dict(self) -> dict:
        return {"kind": "rollback", **attrs.asdict(self), "modules": list(self.modules), "reason": self.reason.value}
