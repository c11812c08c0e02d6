"""The dry-run report: what runs vs what is on disk, what differs, the verdict."""

from __future__ import annotations

import time

import attrs

from ._findings import BLOCKED, SEVERITY_ORDER, Finding, worst
from ._impact import Dependent, Impact
from ._source import FileState

SCHEMA_VERSION = 1

UNCHANGED = "unchanged"
VERDICTS = ("unchanged", "safe", "risky", "blocked")


@attrs.frozen
class SourceSection:
    """Where the module came from and how the running version compares with disk."""

    path: str | None
    baseline: FileState | None
    disk: FileState | None

    @property
    def content_changed(self) -> bool | None:
        if self.baseline is None or self.disk is None:
            return None
        return self.baseline.sha256 != self.disk.sha256

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "disk": self.disk.to_dict() if self.disk else None,
            "content_changed": self.content_changed,
        }


@attrs.frozen
class Report:
    """Verification of one module's candidate change. Creating it changed nothing.

    ``verdict`` is ``unchanged`` when the running code already is the disk
    source, otherwise the worst finding's severity.
    """

    module: str
    verdict: str
    source: SourceSection
    findings: tuple[Finding, ...] = ()
    impact: Impact = attrs.field(factory=Impact)
    dependents: tuple[Dependent, ...] = ()
    created_at: float = attrs.field(factory=time.time)

    @classmethod
    def build(cls, module: str, source: SourceSection, findings: list[Finding],
              impact: Impact | None = None, dependents: tuple[Dependent, ...] = ()) -> Report:
        return cls(module=module, verdict=worst(findings) if findings else UNCHANGED,
                   source=source, findings=tuple(findings), impact=impact or Impact(),
                   dependents=dependents)

    @property
    def blocked(self) -> bool:
        return self.verdict == BLOCKED

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "module": self.module,
            "verdict": self.verdict,
            "source": self.source.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
            "impact": self.impact.to_dict(),
            "dependents": [d.to_dict() for d in self.dependents],
            "created_at": self.created_at,
        }

    def __str__(self) -> str:
        lines = [f"{self.module}: {self.verdict.upper()}"]
        src = self.source
        if src.path:
            lines.append(f"  file: {src.path}")
        if src.baseline and src.disk:
            b, d = src.baseline, src.disk
            lines.append(
                f"  running sha256 {b.sha256[:12]} ({b.size} B, mtime_ns {b.mtime_ns})"
                f" -> disk sha256 {d.sha256[:12]} ({d.size} B, mtime_ns {d.mtime_ns})"
            )
        elif src.disk:
            lines.append(f"  disk sha256 {src.disk.sha256[:12]} ({src.disk.size} B); no baseline")
        ordered = sorted(self.findings, key=lambda f: -SEVERITY_ORDER[f.severity])
        for f in ordered:
            where = f" {f.qualname}" if f.qualname else ""
            lines.append(f"  [{f.severity}] {f.code}{where}: {f.message}")
            if f.detail:
                lines.extend("      " + d for d in f.detail.splitlines())
        if not self.findings:
            lines.append("  nothing to do: the running code is the disk source")
        impact = self.impact.lines()
        if impact:
            lines.append("  runtime impact:")
            lines.extend("    " + x for x in impact)
        if self.dependents:
            lines.append("  dependents:")
            lines.extend(f"    {d.module} ({', '.join(d.names)}): {d.effect}" for d in self.dependents)
        return "\n".join(lines)
