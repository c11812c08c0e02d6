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
class Patch:
    """The outcome of ``hotfix.apply``: what was applied and how long workers were held."""

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

    def to_dict(self) -> dict:
        return {
            "kind": "patch",
            "id": self.id,
            "status": self.status.value,
            "modules": list(self.modules),
            "sha256": list(self.sha256),
            "stall_seconds": self.stall_seconds,
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
