"""What this process is in the service: parent or forked child, serving or not.

The rollout reads this (through the endpoint's ``status``) to pick a canary
that serves traffic and to patch fork sources so that children forked later
are born patched. Integrations report units of work (requests, tasks) and
may name the process's role (``"worker"``, ``"supervisor"``).
"""

from __future__ import annotations

import os
import threading
import time

import attrs

_lock = threading.Lock()


@attrs.define
class _State:
    role: str | None = None  # set by an integration: "worker" serves, "supervisor" does not
    server: str | None = None  # "gunicorn", "uvicorn", "celery", ...
    forked_from: int | None = None  # parent pid when this process is a fork child
    forks: int = 0  # children forked by this process
    units_started: int = 0
    units_in_flight: int = 0
    last_unit_at: float | None = None
    started_at: float = attrs.field(factory=time.time)


_state = _State()


def set_role(role: str, server: str | None = None) -> None:
    with _lock:
        _state.role = role
        if server is not None:
            _state.server = server


def unit_started() -> None:
    with _lock:
        _state.units_started += 1
        _state.units_in_flight += 1
        _state.last_unit_at = time.time()


def unit_finished() -> None:
    with _lock:
        _state.units_in_flight -= 1


def _after_fork_in_parent() -> None:
    _state.forks += 1


def _after_fork_in_child() -> None:
    global _lock, _state
    _lock = threading.Lock()  # the parent's may have been held by another thread at fork
    parent = _state
    _state = _State(server=parent.server, forked_from=os.getppid())


os.register_at_fork(after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def serves_traffic() -> bool | None:
    """True: it has run units of work or is a worker; False: a supervisor that ran none; None: unknown."""
    s = _state
    if s.units_started or s.role == "worker":
        return True
    if s.role == "supervisor" or s.forks:
        return False
    return None


def process_info() -> dict:
    """JSON-ready; the ``process`` section of the endpoint's status."""
    s = _state
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "forked_from": s.forked_from,
        "fork_source": s.forks > 0,
        "forks": s.forks,
        "role": s.role,
        "server": s.server,
        "serves_traffic": serves_traffic(),
        "units_of_work": s.units_started,
        "units_in_flight": s.units_in_flight,
        "last_unit_at": s.last_unit_at,
        "started_at": s.started_at,
    }
