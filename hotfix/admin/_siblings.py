"""Sibling processes of a mounted admin app: the other workers of the same multi-process server.

A WSGI/ASGI app mounted in a pre-fork server (gunicorn, uvicorn ``--workers``)
answers from whichever worker took the request: an apply there patches *that
process only*. So before a mounted app changes code it looks for siblings:

* the socket directory of ``hotfix run`` / ``serve_socket_dir``
  (``HOTFIX_SOCKET_DIR``): live ``<pid>.sock`` of other processes;
* the process tree (Linux ``/proc``), when this process was forked by its
  parent or the parent is a known multi-process server: other children of
  the parent running the same program with the same arguments (digits
  aside: multiprocessing passes a different pipe number to each spawned
  worker). Other parents (a shell, a test runner) are not taken as servers.
"""

from __future__ import annotations

import os
import re

from ._server import pid_alive

_DIGITS = re.compile(rb"\d+")
#: Programs that run one app in several worker processes.
SERVERS = (b"gunicorn", b"uvicorn", b"hypercorn", b"celery", b"uwsgi", b"daphne", b"granian", b"waitress")


def _raw_cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _cmdline(pid: int) -> bytes | None:
    raw = _raw_cmdline(pid)
    return None if raw is None else _DIGITS.sub(b"#", raw)


def _program(pid: int) -> bytes:
    """The program a process runs: ``gunicorn`` for ``/venv/bin/gunicorn``, ``python -m gunicorn``
    and ``python /venv/bin/gunicorn`` alike (its arguments are not looked at)."""
    args = (_raw_cmdline(pid) or b"").split(b"\0")
    prog = os.path.basename(args[0])
    if prog.startswith(b"python") and len(args) > 1:
        prog = args[2] if args[1] == b"-m" and len(args) > 2 else os.path.basename(args[1])
    return prog.split(b".")[0]


def children_of(pid: int) -> list[int]:
    """Live children of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


def _server_parent() -> bool:
    from .._run._process import process_info

    if process_info()["forked_from"] == os.getppid():
        return True
    return _program(os.getppid()) in SERVERS


def process_tree_siblings() -> list[int]:
    me = os.getpid()
    mine = _cmdline(me)
    if mine is None or not _server_parent():
        return []
    return sorted(pid for pid in children_of(os.getppid()) if pid != me and _cmdline(pid) == mine)


def socket_dir_siblings(socket_dir: str | None) -> list[int]:
    if not socket_dir or not os.path.isdir(socket_dir):
        return []
    out = []
    for name in os.listdir(socket_dir):
        stem, ext = os.path.splitext(name)
        if ext == ".sock" and stem.isdigit() and int(stem) != os.getpid() and pid_alive(int(stem)):
            out.append(int(stem))
    return sorted(out)


def siblings(socket_dir: str | None = None) -> tuple[list[int], str | None]:
    """``(pids, socket_dir)``: other processes of this service, and the socket directory if known."""
    socket_dir = socket_dir or os.environ.get("HOTFIX_SOCKET_DIR") or None
    found = set(socket_dir_siblings(socket_dir)) | set(process_tree_siblings())
    return sorted(found), socket_dir


def refusal(pids: list[int], socket_dir: str | None) -> str:
    how = (f"use `hotfix rollout --socket-dir {socket_dir} apply MODULE`" if socket_dir
           else "start the service with `hotfix run` and use `hotfix rollout`")
    shown = ", ".join(map(str, pids[:8])) + (", ..." if len(pids) > 8 else "")
    return (f"this mounted endpoint would patch this process only (pid {os.getpid()}); {len(pids)} other "
            f"process(es) of this service ({shown}) would keep their code: {how}. To patch this one "
            "process anyway, mount the app with allow_single_process=True.")


_CHANGING_ROUTES = ("apply", "rollback")


def guard(router, request, allow_single_process: bool, socket_dir: str | None):
    """For a mounted app: the refusal to send instead of applying in one process of many, or None.

    Only authorised requests to apply/rollback are checked (an unauthorised
    peer learns nothing about the process tree; the router answers 401).
    """
    from ._auth import token_matches
    from ._routes import API_PREFIX

    path = request.path.split("?", 1)[0]
    if request.method != "POST" or path not in {f"{API_PREFIX}/{r}" for r in _CHANGING_ROUTES}:
        return None
    if not token_matches(router._token, request.headers.get("authorization")):
        return None
    pids, directory = siblings(socket_dir)
    if not pids:
        return None
    if allow_single_process:
        return None
    import attrs

    # a refusal like any other (409 ``rejected``, nothing changed; the CLI exits 3), for this reason
    response = router.refuse(request, 409, "rejected", refusal(pids, directory))
    return attrs.evolve(response, payload={**response.payload, "outcome": "rejected", "reason": "siblings",
                                           "pid": os.getpid(), "siblings": pids, "socket_dir": directory})


def annotate(response, request, socket_dir: str | None):
    """A successful apply/rollback from a mounted app says which process it changed, and its siblings."""
    from ._routes import API_PREFIX

    path = request.path.split("?", 1)[0]
    if response.status != 200 or path not in {f"{API_PREFIX}/{r}" for r in _CHANGING_ROUTES}:
        return response
    import attrs

    pids, _ = siblings(socket_dir)
    scope = {"pid": os.getpid(), "siblings": pids,
             "note": f"this process only (pid {os.getpid()}); {len(pids)} sibling(s) not changed: use hotfix rollout"
             if pids else f"this process only (pid {os.getpid()})"}
    return attrs.evolve(response, payload={**response.payload, "scope": scope})
