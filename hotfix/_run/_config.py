"""The launcher's settings: one record, read from and written to the environment.

``hotfix run`` turns its options into environment variables; the bootstrap
(``sitecustomize``) in every Python process of the service reads them back.
So every option has an environment twin, and a child interpreter started by
the service sees exactly what its parent saw.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

ENV_SOCKET_DIR = "HOTFIX_SOCKET_DIR"
ENV_PREFIXES = "HOTFIX_PREFIXES"  # comma-separated dotted-name prefixes
ENV_ROOTS = "HOTFIX_ROOTS"  # os.pathsep-separated directories
ENV_AUDIT_LOG = "HOTFIX_AUDIT_LOG"
ENV_PROBATION = "HOTFIX_PROBATION"
ENV_TIMEOUT = "HOTFIX_TIMEOUT"
ENV_CHECKS = "HOTFIX_CHECKS"  # comma-separated [MODULE=]pkg.mod:fn
ENV_DISABLED = "HOTFIX_DISABLED"
ENV_LOG_LEVEL = "HOTFIX_LOG_LEVEL"
ENV_COVER_EXECUTORS = "HOTFIX_COVER_EXECUTORS"
ENV_INTEGRATIONS = "HOTFIX_INTEGRATIONS"  # "0" turns the framework hooks off
ENV_BOOTSTRAP = "HOTFIX_BOOTSTRAP_DIR"  # set by `hotfix run`: the directory it put on PYTHONPATH

_TRUE = ("1", "true", "yes", "on")


class ConfigError(ValueError):
    """An option or environment variable has a value the launcher cannot use."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@attrs.frozen
class CheckSpec:
    """A check named by its dotted path, resolved (imported) in each process when it first runs.

    ``module`` is the module whose patches it checks; ``None``: every module.
    """

    target: str  # "pkg.mod:fn"
    module: str | None = None

    @classmethod
    def parse(cls, text: str) -> CheckSpec:
        module, sep, target = text.strip().rpartition("=")
        mod, colon, fn = target.partition(":")
        parts = [*mod.split("."), *fn.split(".")]
        if not colon or not all(p.isidentifier() for p in parts) or (sep and not all(
                p.isidentifier() for p in module.split("."))):
            raise ConfigError("--check", f"{text!r} is not [MODULE=]package.module:function")
        return cls(target, module if sep else None)

    def __str__(self) -> str:
        return f"{self.module}={self.target}" if self.module else self.target


def _float(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(name, f"not a number: {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigError(name, f"must be a finite number >= 0, not {value!r}")
    return number


@attrs.frozen
class RunConfig:
    socket_dir: str | None = None
    prefixes: tuple[str, ...] | None = None
    roots: tuple[str, ...] | None = None
    audit_log: str | None = None
    probation: float | None = None
    timeout: float | None = None
    checks: tuple[CheckSpec, ...] = ()
    disabled: bool = False
    log_level: str | None = None
    cover_executors: bool = False
    integrations: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunConfig:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        prefixes = get(ENV_PREFIXES)
        roots = get(ENV_ROOTS)
        checks = get(ENV_CHECKS)
        return cls(
            socket_dir=get(ENV_SOCKET_DIR),
            prefixes=tuple(p.strip() for p in prefixes.split(",") if p.strip()) if prefixes else None,
            roots=tuple(r for r in roots.split(os.pathsep) if r) if roots else None,
            audit_log=get(ENV_AUDIT_LOG),
            probation=_float(ENV_PROBATION, get(ENV_PROBATION)),
            timeout=_float(ENV_TIMEOUT, get(ENV_TIMEOUT)),
            checks=tuple(CheckSpec.parse(c) for c in checks.split(",") if c.strip()) if checks else (),
            disabled=(get(ENV_DISABLED) or "").lower() in _TRUE,
            log_level=get(ENV_LOG_LEVEL),
            cover_executors=(get(ENV_COVER_EXECUTORS) or "").lower() in _TRUE,
            integrations=(get(ENV_INTEGRATIONS) or "1").lower() in _TRUE,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make ``from_env`` return this record."""
        out = {
            ENV_SOCKET_DIR: self.socket_dir or "",
            ENV_PREFIXES: ",".join(self.prefixes) if self.prefixes is not None else "",
            ENV_ROOTS: os.pathsep.join(self.roots) if self.roots is not None else "",
            ENV_AUDIT_LOG: self.audit_log or "",
            ENV_PROBATION: "" if self.probation is None else repr(self.probation),
            ENV_TIMEOUT: "" if self.timeout is None else repr(self.timeout),
            ENV_CHECKS: ",".join(str(c) for c in self.checks),
            ENV_DISABLED: "1" if self.disabled else "",
            ENV_LOG_LEVEL: self.log_level or "",
            ENV_COVER_EXECUTORS: "1" if self.cover_executors else "",
            ENV_INTEGRATIONS: "1" if self.integrations else "0",
        }
        return {k: v for k, v in out.items() if v}
