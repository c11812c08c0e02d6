"""``hotfix run [options] -- COMMAND [ARGS...]``: start a service with hotfix in every Python process.

The options become ``HOTFIX_*`` environment variables and the bootstrap
directory goes first on ``PYTHONPATH``; then ``COMMAND`` replaces this
process (``exec``), so signals, exit codes and the pid are the service's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from ._config import ENV_BOOTSTRAP, RunConfig

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


def default_socket_dir() -> str:
    from hotfix.admin._auth import runtime_dir

    return os.path.join(runtime_dir(), f"run-{os.getpid()}")


def service_env(config: RunConfig, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the launcher's settings and the bootstrap directory first on PYTHONPATH."""
    from ._config import (
        ENV_AUDIT_LOG,
        ENV_CHECKS,
        ENV_COVER_EXECUTORS,
        ENV_DISABLED,
        ENV_INTEGRATIONS,
        ENV_LOG_LEVEL,
        ENV_PREFIXES,
        ENV_PROBATION,
        ENV_ROOTS,
        ENV_SOCKET_DIR,
        ENV_TIMEOUT,
    )

    env = {k: v for k, v in base.items() if k not in (
        ENV_AUDIT_LOG, ENV_CHECKS, ENV_COVER_EXECUTORS, ENV_DISABLED, ENV_INTEGRATIONS, ENV_LOG_LEVEL,
        ENV_PREFIXES, ENV_PROBATION, ENV_ROOTS, ENV_SOCKET_DIR, ENV_TIMEOUT)}
    env.update(config.to_env())
    if config.disabled:
        return env
    parts = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *parts])
    env[ENV_BOOTSTRAP] = BOOTSTRAP_DIR
    return env


def exec_service(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Replace this process with ``command``; returns only on failure (127: not found, 126: not runnable)."""
    try:
        os.execvpe(command[0], list(command), dict(env))
    except FileNotFoundError:
        print(f"hotfix run: {command[0]}: command not found", file=sys.stderr)
        return 127
    except OSError as exc:
        print(f"hotfix run: {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 126
    return 126  # pragma: no cover - execvpe does not return
