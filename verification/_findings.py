"""Findings and the catalog of reason codes.

Every finding carries a stable reason code from ``REASONS``; the README has
the same catalog as a table. Severity decides the report's verdict: the
worst finding wins (``blocked`` > ``risky`` > ``safe``).
"""

from __future__ import annotations

import attrs

SAFE = "safe"
RISKY = "risky"
BLOCKED = "blocked"
SEVERITY_ORDER = {SAFE: 0, RISKY: 1, BLOCKED: 2}

#: reason code -> (severity, what it means)
REASONS: dict[str, tuple[str, str]] = {
    # blocked: hotfix will not apply these
    "syntax-error": (BLOCKED, "the file on disk does not compile"),
    "file-missing": (BLOCKED, "the module's source file does not exist"),
    "file-unreadable": (BLOCKED, "the module's source file cannot be read"),
    "file-too-large": (BLOCKED, "the source file is larger than the size limit"),
    "not-a-file": (BLOCKED, "the module's source path is not a regular file"),
    "undecodable-file": (BLOCKED, "the file is not valid text in its declared encoding (UTF-8 by default)"),
    "not-a-source-module": (BLOCKED, "builtin, frozen, extension or namespace module: no Python source to swap"),
    "main-module": (BLOCKED, "__main__ is the running script; its definitions cannot be swapped safely"),
    "bases-changed": (BLOCKED, "a class's bases changed; existing instances would keep the old MRO"),
    "metaclass-changed": (BLOCKED, "a class's metaclass or class keywords changed"),
    "class-decorators-changed": (BLOCKED, "a class's decorators changed; re-running them on the live class is unsafe"),
    "slots-changed": (BLOCKED, "a class's __slots__ changed; the instance layout cannot change in place"),
    "fields-changed": (BLOCKED, "a dataclass/attrs class's fields changed; generated methods and instances would disagree"),
    "enum-members-changed": (BLOCKED, "an Enum's members were removed or their values changed; members are singletons created once"),
    "too-deep": (BLOCKED, "the source nests deeper than the analysis can follow (for example a very long expression chain)"),
    # risky: applied only with allow_risky=True
    "signature-changed": (RISKY, "a function's parameters changed; existing callers may pass the old arguments"),
    "exception-handling-changed": (RISKY, "a function catches different exceptions now"),
    "old-object-held": (RISKY, "a re-created definition's old object is still held where hotfix cannot re-bind it (named per holder)"),
    "removed-but-referenced": (RISKY, "a removed function or class is still referred to by remaining code or by dependents"),
    "init-subclass-changed": (RISKY, "__init_subclass__ changed; subclasses created before keep what the old hook did"),
    "metaclass-hook-changed": (RISKY, "a metaclass's __new__/__init__/__prepare__/__call__ changed; existing classes keep what the old one did"),
    "abstract-method-added": (RISKY, "a new abstract method; existing subclasses and instances are not re-checked"),
    "set-name-changed": (RISKY, "__set_name__ changed; attributes of existing classes keep what the old hook set"),
    "lambda-changed": (RISKY, "a module- or class-level lambda changed; a new one is bound, holders keep the old one"),
    "cached-values": (RISKY, "a cached_property changed while live instances hold values the old code computed"),
    "statement-with-call": (RISKY, "a changed module- or class-level statement calls code when it is re-run"),
    "state-reset": (RISKY, "a changed statement re-binds a name that holds live state"),
    "init-changed-live-instances": (RISKY, "__init__ changed while instances are alive; they were built by the old one"),
    "no-live-object": (RISKY, "a changed definition has no live object to update; a new one is bound"),
    # safe
    "closure-changed": (SAFE, "a function's closure variables changed; it is re-created and re-bound (holders that cannot be re-bound are reported as old-object-held)"),
    "decorators-changed": (SAFE, "a function's decorators changed; it is re-created with the new decorators and re-bound (see old-object-held)"),
    "enum-member-added": (SAFE, "members were added to an Enum; existing members keep their identity, new ones join them in source order"),
    "dependent-rerun": (SAFE, "an unchanged statement or definition uses what the patch re-creates; it runs again, in source order"),
    "state-kept": (SAFE, "an unchanged statement keeps module data it computed with code the patch changes (state kept on purpose)"),
    "signature-changed-local": (SAFE, "a function's parameters changed and no other loaded module refers to it: every caller is the new code"),
    "body-changed": (SAFE, "a function's body changed; the function keeps its identity"),
    "defaults-changed": (SAFE, "a function's default values changed"),
    "annotations-changed": (SAFE, "a function's annotations changed"),
    "docstring-changed": (SAFE, "a docstring changed"),
    "line-shift": (SAFE, "only line numbers moved; swapped so tracebacks stay right"),
    "function-added": (SAFE, "a new function or method is defined"),
    "function-removed": (SAFE, "a function or method is removed from its namespace"),
    "class-added": (SAFE, "a new class is defined"),
    "class-removed": (SAFE, "a class is removed from its namespace; existing instances keep it"),
    "statement-added": (SAFE, "a new or changed module- or class-level statement without calls is run"),
    "statement-removed": (SAFE, "a statement was removed; names only it bound are deleted"),
    "import-changed": (SAFE, "an import statement was added or changed and is run"),
    "source-only": (SAFE, "the text changed but compiles to the same code (comments, formatting)"),
    "no-baseline": (SAFE, "the module was imported before hotfix.install(); live code is compared instead, module-level statements are not compared and not re-run"),
}


@attrs.frozen
class Finding:
    """One thing the verifier found, with a stable reason code."""

    code: str = attrs.field()
    qualname: str | None
    message: str
    detail: str | None = None

    @code.validator
    def _known(self, attribute: object, value: str) -> None:
        if value not in REASONS:
            raise ValueError(f"unknown reason code {value!r}")

    @property
    def severity(self) -> str:
        return REASONS[self.code][0]

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "qualname": self.qualname,
            "message": self.message,
            "detail": self.detail,
        }


def worst(findings: tuple[Finding, ...] | list[Finding]) -> str:
    level = SAFE
    for f in findings:
        if SEVERITY_ORDER[f.severity] > SEVERITY_ORDER[level]:
            level = f.severity
    return level
