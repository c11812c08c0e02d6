"""Several processes: patch, inspect and undo every process of a service, canary first.

Each process serves its own endpoint on ``<socket-dir>/<pid>.sock`` (``hotfix
run`` does it in every process; or ``hotfix.admin.serve_socket_dir``).

``apply``:

1. *Preflight* (changes nothing): status and dry-run in every process.
   A process that has not imported the module is ``not-loaded`` (skipped: it
   will import the file on disk); a socket whose process has exited is
   ``gone``. Abort if a live process does not answer or refuses, the module
   is blocked, the processes see different files, a process is in the middle
   of another transaction, or the change is risky without ``allow_risky``.
   One rollout or rollback at a time per socket directory (``flock``).
2. *Canary*: one process that serves traffic (it has run units of work or
   is a server's worker; never a server's supervisor, whose probation would
   see no traffic), pinned to the sha256 every process reported. If it exits
   first (a recycled worker), another is chosen, processes that appeared
   meanwhile included; if none is left, abort with no live process changed.
   Apply is synchronous: its checks and probation are over when it answers.
3. *Fork sources* next (a gunicorn master with ``--preload``, Celery's main
   process), so children forked from now on are born patched; then the rest.
   On the first failure, roll back every process patched so far (newest
   first) and stop. A process that exits meanwhile is ``gone``, not a failure.
4. *Convergence*: processes that appeared meanwhile are checked and patched
   if they run another version; then every live process that has the module
   loaded must run the reviewed sha256, or the outcome is ``not-converged``.

``status`` shows per process the sha256 running and the patches in effect,
and whether the service has converged. ``rollback`` undoes the last rollout
(recorded in ``<socket-dir>/last-rollout.json``) in every live process
running it, processes forked since included.

Exit codes are the CLI's: 0 done / converged, 1 risky, rolled back or not
converged, 2 usage, 3 rejected/blocked, 4 a live process unreachable or not
authorised. Skipping ``not-loaded`` and ``gone`` processes is not a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping

import attrs

from ._outcomes import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RISKY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for_reply,
)
from ._records import hold_of, hold_phrase
from .admin._client import Client, Reply, Unreachable
from .admin._server import pid_alive
from .admin._siblings import children_of

RECORD_NAME = "last-rollout.json"
#: Held (``flock``) by a rollout apply or rollback: one at a time per socket directory.
LOCK_NAME = ".rollout.lock"
#: Canaries that may exit (recycled workers) before the rollout gives up finding one.
CANARY_ATTEMPTS = 8
#: Rounds of looking for a new process to be the canary when none that serves traffic is left.
CANARY_SEARCH_ROUNDS = 12
#: How often to retry a live process whose endpoint does not answer (it may be starting).
CONNECT_RETRIES = 5


@attrs.define
class ProcessResult:
    """One process; ``outcome`` is what happened to it last, ``sha256`` what it runs (when known).

    ``role``: ``canary`` (the process patched first), ``fork-source`` (forked
    children and serves nothing), ``worker`` (serves traffic) or ``process``.
    """

    pid: int
    socket: str
    role: str = "process"
    outcome: str = "pending"
    verdict: str | None = None
    sha256: str | None = None
    disk_sha256: str | None = None
    previous_sha256: str | None = None  # what it ran before this rollout patched it
    patch_id: str | None = None
    http_status: int | None = None
    message: str = ""
    exit_code: int = EXIT_OK
    ppid: int | None = None
    serves_traffic: bool | None = None
    fork_source: bool = False
    supervisor: bool = False  # a server's parent process that runs no units of work (never a canary by itself)
    units_of_work: int = 0
    patches: list[str] = attrs.field(factory=list)
    pending: list[str] = attrs.field(factory=list)  # patches mid-transaction (in their checks or probation)
    findings: list[str] = attrs.field(factory=list)  # the dry run's finding codes
    late: bool = False  # appeared after the rollout started
    hold: dict | None = None  # who its apply held and waited for (``Hold.to_dict()``)

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.define
class RolloutResult:
    action: str
    module: str | None
    socket_dir: str
    outcome: str = "pending"
    exit_code: int = EXIT_OK
    consistent: bool = True
    converged: bool | None = None
    sha256: str | None = None
    canary: int | None = None
    message: str = ""
    processes: list[ProcessResult] = attrs.field(factory=list)

    def to_dict(self) -> dict:
        return {
            "action": self.action, "module": self.module, "socket_dir": self.socket_dir,
            "outcome": self.outcome, "exit_code": self.exit_code, "consistent": self.consistent,
            "converged": self.converged, "sha256": self.sha256, "canary": self.canary,
            "message": self.message, "processes": [p.to_dict() for p in self.processes],
        }


def discover(socket_dir: str) -> list[tuple[int, str]]:
    """``(pid, path)`` of every ``<pid>.sock`` in the directory, lowest pid first."""
    found = []
    for name in os.listdir(socket_dir):
        stem, ext = os.path.splitext(name)
        if ext == ".sock" and stem.isdigit():
            found.append((int(stem), os.path.join(socket_dir, name)))
    found.sort()
    return found


def reply_exit_code(command: str, reply: Reply) -> int:
    """The CLI exit code an endpoint answer means (the table in ``hotfix._outcomes``)."""
    return exit_code_for_reply(command, reply.status, reply.body)


class _Gone(Exception):
    """The process behind a socket has exited."""


class _Fleet:
    """Clients for the processes of one socket directory."""

    def __init__(self, socket_dir: str, token: str | None, http_timeout: float,
                 headers: Mapping[str, str] | None = None) -> None:
        self.socket_dir = socket_dir
        self.token = token
        self.http_timeout = http_timeout
        self.headers = headers  # who asks and why, the caller's trace: sent to every process

    def client(self, proc: ProcessResult, timeout: float | None = None) -> Client:
        return Client(socket_path=proc.socket, token=self.token, timeout=timeout or min(self.http_timeout, 30.0),
                      headers=self.headers)

    def call(self, proc: ProcessResult, fn: Callable[[Client], Reply], timeout: float | None = None,
             retry: bool = True) -> Reply:
        """One request; ``_Gone`` if the process has exited, ``Unreachable`` if it is alive and silent."""
        attempts = CONNECT_RETRIES if retry else 1
        for attempt in range(attempts):
            try:
                return fn(self.client(proc, timeout))
            except Unreachable:
                if process_exited(proc.pid, proc.socket):
                    raise _Gone() from None
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))  # a process just forked may not serve yet (~2 s in all)
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self, proc: ProcessResult, module: str | None) -> dict:
        """Status of one process: fills role fields, running sha256 and patches in effect."""
        body = self.call(proc, lambda c: c.status()).body
        info = body.get("process") or {}
        proc.ppid = info.get("ppid")
        proc.serves_traffic = info.get("serves_traffic")
        proc.fork_source = bool(info.get("fork_source"))
        proc.units_of_work = int(info.get("units_of_work") or 0)
        proc.supervisor = info.get("role") == "supervisor"
        if proc.role != "canary":
            proc.role = "fork-source" if proc.serves_traffic is False else "worker" if proc.serves_traffic else "process"
        mine = [p for p in body.get("patches") or [] if module is None or module in (p.get("modules") or [])]
        proc.patches = [p["id"] for p in mine if p.get("in_effect")]
        proc.pending = [p["id"] for p in mine if p.get("status") == "pending"]
        if module is not None:
            proc.sha256 = (body.get("running_sha256") or {}).get(module)
        return body


#: How long a child a fork source has just forked may take to serve its endpoint.
CHILD_SOCKET_WAIT = 5.0


def _wait_for_new_children(result: RolloutResult) -> None:
    """Children forked during the rollout serve their endpoint right after ``fork()``; one forked just
    before a fork source was patched may not have yet. Wait (bounded) until every live child of a
    live fork source has its socket, so that convergence checks it too."""
    sources = [p.pid for p in result.processes if p.fork_source and p.outcome != "gone"]
    deadline = time.monotonic() + CHILD_SOCKET_WAIT
    while sources:
        known = {pid for pid, _ in discover(result.socket_dir)} | {p.pid for p in result.processes}
        missing = [c for pid in sources for c in children_of(pid)
                   if c not in known and not process_exited(c, result.socket_dir)]
        if not missing or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def process_exited(pid: int, socket_path: str) -> bool:
    """The process has exited (or is exiting: a zombie, or its endpoint removed its socket)."""
    if not pid_alive(pid) or not os.path.exists(socket_path):
        return True
    try:  # Linux: a zombie still answers kill(pid, 0) until its parent reaps it
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[:1] in ([b"Z"], [b"X"])
    except OSError:
        return False


def _members(socket_dir: str, seen: set[int] | None = None) -> list[ProcessResult]:
    return [ProcessResult(pid, path) for pid, path in discover(socket_dir) if seen is None or pid not in seen]


@contextlib.contextmanager
def _exclusive(socket_dir: str):
    """Yields None when this rollout holds the socket directory's lock, else the holder's pid (or 0).

    Two rollouts at once would each see the other's canary mid-probation and take it for done."""
    path = os.path.join(socket_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        yield None  # a read-only directory: the endpoints' own busy checks still apply
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            yield int(holder) if holder.isdigit() else 0
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _busy(result: RolloutResult, holder: int) -> RolloutResult:
    who = f" (pid {holder})" if holder else ""
    return _finish(result, "aborted", EXIT_REJECTED, f"another rollout or rollback is running on {result.socket_dir}"
                   f"{who}; nothing was changed: wait for it to finish, then check `rollout status`")


def rollout(
    socket_dir: str,
    module: str,
    *,
    token: str | None,
    action: str = "apply",
    allow_risky: bool = False,
    probation: float | None = None,
    timeout: float | None = None,
    expect_sha256: str | None = None,
    canary: int | None = None,
    http_timeout: float = 300.0,
    progress: Callable[[ProcessResult], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> RolloutResult:
    """Run a rollout (``action="apply"``) or a fleet dry run (``action="dry-run"``).

    ``headers`` go with every request (the CLI's operator identity and ``traceparent``)."""
    if action != "apply":
        return _rollout(socket_dir, module, token=token, action=action, allow_risky=allow_risky,
                        expect_sha256=expect_sha256, http_timeout=http_timeout, progress=progress, headers=headers)
    with _exclusive(socket_dir) as holder:
        if holder is not None:
            return _busy(RolloutResult(action, module, socket_dir), holder)
        return _rollout(socket_dir, module, token=token, action=action, allow_risky=allow_risky, probation=probation,
                        timeout=timeout, expect_sha256=expect_sha256, canary=canary, http_timeout=http_timeout,
                        progress=progress, headers=headers)


def _rollout(
    socket_dir: str,
    module: str,
    *,
    token: str | None,
    action: str,
    allow_risky: bool = False,
    probation: float | None = None,
    timeout: float | None = None,
    expect_sha256: str | None = None,
    canary: int | None = None,
    http_timeout: float = 300.0,
    progress: Callable[[ProcessResult], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> RolloutResult:
    result = RolloutResult(action, module, socket_dir)
    report = progress or (lambda p: None)
    fleet = _Fleet(socket_dir, token, http_timeout, headers)
    result.processes = _members(socket_dir)
    if not result.processes:
        return _finish(result, "aborted", EXIT_UNREACHABLE, f"no <pid>.sock endpoints in {socket_dir}")

    # 1. preflight: status and dry-run everywhere, change nothing
    live: list[ProcessResult] = []
    abort: tuple[int, str] | None = None
    for proc in result.processes:
        check = _preflight(fleet, proc, module)
        if check is not None:
            abort = abort or check
        if proc.outcome == "checked":
            live.append(proc)
        if action == "dry-run" and proc.outcome == "checked":
            proc.outcome = proc.verdict or "?"
        report(proc)
    if action == "dry-run":
        result.exit_code = max((p.exit_code for p in result.processes), default=EXIT_OK)
        result.sha256 = _common(p.disk_sha256 for p in live) if live else None
        verdicts = sorted({p.verdict or "?" for p in live})
        result.outcome = "dry-run"
        result.message = (f"{len(live)} process(es) have {module} loaded: {', '.join(verdicts) or 'none'}"
                          + (f", disk sha256 {result.sha256}" if result.sha256 else ""))
        if abort:
            result.message = abort[1]
        elif live and result.sha256 is None:
            result.exit_code, result.message = EXIT_REJECTED, "processes see different files on disk"
        return result
    if abort:
        _mark_untouched(result)
        outcome = "unreachable" if abort[0] == EXIT_UNREACHABLE else "aborted"
        return _finish(result, outcome, abort[0], "preflight failed, nothing was changed: " + abort[1])
    if not live:
        return _finish(result, "not-loaded", EXIT_OK, f"no live process has {module} loaded; nothing to patch "
                       "(processes import the file on disk when they first need it)")
    shas = {p.disk_sha256 for p in live}
    if len(shas) != 1 or None in shas:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_REJECTED, "processes see different files on disk "
                       f"({', '.join(sorted(s[:12] for s in shas if s))}); nothing was changed")
    sha = shas.pop()
    assert sha is not None  # None was refused above
    result.sha256 = sha
    if expect_sha256 and expect_sha256 != sha:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_REJECTED, f"the file's sha256 is {sha}, not the reviewed "
                       f"{expect_sha256}; nothing was changed")
    seen_verdicts = {p.verdict for p in live}
    if "blocked" in seen_verdicts:
        _mark_untouched(result)
        codes = sorted({c for p in live if p.verdict == "blocked" for c in p.findings})
        advice = ("the file does not compile: fix it (a restart would not start either)" if "syntax-error" in codes
                  else "a hot patch cannot apply it: restart the service to load it")
        return _finish(result, "aborted", EXIT_REJECTED, f"the change is blocked ({', '.join(codes) or '?'}); "
                       f"nothing was changed; {advice}")
    if "risky" in seen_verdicts and not allow_risky:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_RISKY, "the change is risky; review the dry run and pass "
                       "--allow-risky; nothing was changed")
    todo = [p for p in live if p.verdict != "unchanged"]
    for proc in live:
        if proc.verdict == "unchanged":
            proc.outcome, proc.message = "unchanged", "already runs the disk version"
    if not todo:
        _converge(fleet, result, module, sha, {}, report)
        return result
    if canary is not None and not any(p.pid == canary for p in todo):
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_USAGE, f"canary pid {canary} is not among the processes to patch")
    fields = {"expect_sha256": sha, "allow_risky": allow_risky or None, "probation": probation, "timeout": timeout}

    # 2. canary (again if it exits first), then 3. fork sources and the rest
    patched: list[ProcessResult] = []
    remaining = list(todo)
    exited_canaries = units_before = 0
    while remaining:
        if not patched:
            found = _next_canary(fleet, result, module, sha, remaining, canary, allow_risky, report)
            if found is None or exited_canaries >= CANARY_ATTEMPTS:
                return _no_canary(result, remaining, exited_canaries, report)
            proc = found
            proc.role = "canary"
            result.canary = proc.pid
            with contextlib.suppress(_Gone, Unreachable):
                fleet.describe(proc, module)  # its units of work so far: the probation's evidence is the difference
            units_before = proc.units_of_work
        else:  # fork sources first: children forked from now on are born patched
            proc = min(remaining, key=lambda p: (p.role != "fork-source", p.pid))
        remaining.remove(proc)
        failed = _apply_one(fleet, proc, module, fields, report)
        if proc.outcome == "applied":
            if not patched:
                _note_canary_traffic(fleet, proc, module, units_before)
            patched.append(proc)
        elif proc.role == "canary" and not patched:
            exited_canaries += proc.outcome == "gone"
            proc.role = "process" if proc.serves_traffic is None else "worker"
        if failed:
            return _compensate(fleet, result, patched, remaining, proc, report)
    _write_record(socket_dir, module, sha, patched)
    # 4. convergence: late processes, then every live holder runs the reviewed sha256
    _converge(fleet, result, module, sha, fields, report)
    return result


def pick_canary(todo: list[ProcessResult]) -> ProcessResult | None:
    """Lowest pid that serves traffic; else one not known to serve nothing; else a fork source that is
    not a server's supervisor (a process that forked helpers and runs the code itself). A supervisor
    (gunicorn's arbiter, Celery's prefork main process) runs no request or task: its probation would
    prove nothing, so it is never picked (``--canary PID`` can name it)."""
    for wanted in (True, None, False):
        for proc in sorted(todo, key=lambda p: p.pid):
            if proc.serves_traffic is wanted and not proc.supervisor:
                return proc
    return None


def _next_canary(fleet: _Fleet, result: RolloutResult, module: str, sha: str, remaining: list[ProcessResult],
                 wanted: int | None, allow_risky: bool, report: Callable[[ProcessResult], None]) -> ProcessResult | None:
    """The operator's canary if still there; else one that serves traffic, looking for processes
    that appeared meanwhile (recycled workers) when none is left."""
    chosen = next((p for p in remaining if p.pid == wanted), None)
    if chosen is not None:
        return chosen
    for attempt in range(CANARY_SEARCH_ROUNDS):
        chosen = pick_canary(remaining)
        if chosen is not None:
            return chosen
        if attempt:
            time.sleep(0.25)  # workers being replaced: give the next one time to serve its endpoint
        remaining.extend(_late_candidates(fleet, result, module, sha, allow_risky, report))
    return pick_canary(remaining)


def _late_candidates(fleet: _Fleet, result: RolloutResult, module: str, sha: str, allow_risky: bool,
                     report: Callable[[ProcessResult], None]) -> list[ProcessResult]:
    """Processes that appeared since the preflight and can take the patch (same file, same verdict rules)."""
    found = []
    for proc in _members(result.socket_dir, {p.pid for p in result.processes}):
        proc.late = True
        result.processes.append(proc)
        if _preflight(fleet, proc, module) is not None or proc.outcome != "checked":
            report(proc)
        elif proc.verdict == "unchanged" and proc.disk_sha256 == sha:
            proc.outcome, proc.message = "unchanged", "appeared during the rollout; runs the reviewed version"
            report(proc)
        elif proc.disk_sha256 != sha or proc.verdict not in ("safe", "risky") or (
                proc.verdict == "risky" and not allow_risky):
            proc.outcome, proc.message = "differs", "appeared during the rollout and sees another file or verdict"
            report(proc)
        else:
            found.append(proc)
    return found


def _no_canary(result: RolloutResult, remaining: list[ProcessResult], exited: int,
               report: Callable[[ProcessResult], None]) -> RolloutResult:
    for proc in remaining:
        proc.outcome, proc.message = "untouched", "no canary: the rollout stopped before this process"
        report(proc)
    result.canary = None
    result.converged = False
    why = (f"{exited} canary process(es) exited before their probation ended (workers recycled faster than the "
           "probation)" if exited else "no process that serves traffic has the module loaded (only a server's "
           "supervisor, which runs no request or task: its probation would prove nothing)")
    return _finish(result, "aborted", EXIT_REJECTED, f"no canary: {why}; no live process was changed. Retry with a "
                   "shorter --probation, or name the canary with --canary PID")


def _note_canary_traffic(fleet: _Fleet, proc: ProcessResult, module: str, units_before: int) -> None:
    """Say how much traffic the canary's probation saw (units of work: requests, tasks, jobs)."""
    try:
        fleet.describe(proc, module)
    except (_Gone, Unreachable):
        return
    if proc.serves_traffic is None and not proc.units_of_work:
        return  # no unit-of-work integration in this process: nothing counted
    ran = proc.units_of_work - units_before
    proc.message += (f", {ran} unit(s) of work ran in it meanwhile" if ran > 0 else
                     ", NO unit of work ran in it meanwhile: traffic did not exercise the patch")


def _preflight(fleet: _Fleet, proc: ProcessResult, module: str) -> tuple[int, str] | None:
    """Status + dry-run of one process; returns an abort reason, or None."""
    try:
        fleet.describe(proc, module)
        reply = fleet.call(proc, lambda c: c.dry_run(module))
    except _Gone:
        proc.outcome, proc.message = "gone", "the process has exited; skipped"
        return None
    except Unreachable as exc:
        proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
        return EXIT_UNREACHABLE, f"process {proc.pid} is unreachable"
    proc.http_status = reply.status
    body = reply.body
    if proc.pending:
        proc.outcome, proc.exit_code = "busy", EXIT_REJECTED
        proc.message = f"in the middle of another transaction ({', '.join(proc.pending)}: its checks or probation)"
        return EXIT_REJECTED, f"process {proc.pid} is {proc.message}"
    if reply.status == 404 and body.get("reason") == "not-loaded":
        proc.outcome, proc.message = "not-loaded", "has not imported the module; it will import the file on disk"
        return None
    if reply.status != 200:
        proc.outcome = "refused"
        proc.message = body.get("message", "")
        proc.exit_code = reply_exit_code("dry-run", reply)
        return proc.exit_code, f"process {proc.pid}: {proc.message}"
    rep = body.get("report") or {}
    proc.verdict = body.get("outcome")
    proc.findings = [str(f.get("code")) for f in rep.get("findings") or []]
    proc.disk_sha256 = ((rep.get("source") or {}).get("disk") or {}).get("sha256")
    proc.exit_code = reply_exit_code("dry-run", reply)
    proc.outcome = "checked"
    proc.message = _first_findings(rep)
    return None


def _apply_one(fleet: _Fleet, proc: ProcessResult, module: str, fields: dict, report: Callable) -> bool:
    """Apply in one process; True when that is a failure that stops the rollout."""
    try:
        reply = fleet.call(proc, lambda c: c.apply(module, http_timeout=fleet.http_timeout, **fields),
                           timeout=fleet.http_timeout, retry=False)
    except _Gone:
        proc.outcome, proc.message = "gone", "the process exited during the rollout; skipped"
        report(proc)
        return False
    except Unreachable as exc:
        proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
        report(proc)
        return True
    proc.http_status = reply.status
    proc.exit_code = reply_exit_code("apply", reply)
    body = reply.body
    if reply.status == 200:
        patch = body.get("patch") or {}
        proc.outcome = body.get("outcome", "applied")
        proc.patch_id = patch.get("id")
        proc.previous_sha256, proc.sha256 = proc.sha256, fields.get("expect_sha256")
        proc.hold = patch.get("hold")
        proc.message = f"{hold_phrase(patch)}; probation {patch.get('probation_seconds', 0):.2f}s passed"
        report(proc)
        return False
    if reply.status == 404 and body.get("reason") == "not-loaded":
        proc.outcome, proc.message = "not-loaded", "unloaded the module meanwhile; skipped"
        report(proc)
        return False
    proc.outcome = body.get("outcome") or body.get("error") or f"http-{reply.status}"
    proc.patch_id = body.get("patch_id")
    proc.message = body.get("message", "")
    report(proc)
    return True


def _converge(fleet: _Fleet, result: RolloutResult, module: str, sha: str, fields: dict,
              report: Callable[[ProcessResult], None]) -> None:
    """Check late processes (patch them if needed), then that every live holder runs ``sha``."""
    _wait_for_new_children(result)
    seen = {p.pid for p in result.processes}
    for proc in _members(result.socket_dir, seen):
        proc.late = True
        result.processes.append(proc)
        if _preflight(fleet, proc, module) is not None or proc.outcome != "checked":
            report(proc)
            continue
        if proc.verdict == "unchanged" and proc.disk_sha256 == sha:
            proc.outcome, proc.message = "unchanged", "appeared during the rollout; runs the reviewed version"
            report(proc)
            continue
        if proc.disk_sha256 != sha or proc.verdict not in ("safe", "risky") or not fields:
            proc.outcome, proc.message = "differs", "appeared during the rollout and runs another version"
            report(proc)
            continue
        _apply_one(fleet, proc, module, fields, report)
    lagging = []
    for proc in result.processes:
        if proc.outcome in ("gone", "not-loaded", "unreachable"):
            continue
        try:
            fleet.describe(proc, module)
        except _Gone:
            done = f"{proc.outcome} ({proc.message}), then exited" if proc.outcome == "applied" else "has exited"
            proc.outcome, proc.message = "gone", f"the process {done}; skipped"
            continue
        except Unreachable as exc:
            proc.outcome, proc.message = "unreachable", str(exc)
            lagging.append(proc)
            continue
        if proc.sha256 is not None and proc.sha256 != sha:
            lagging.append(proc)
            if proc.outcome in ("applied", "unchanged"):
                proc.outcome = "differs"
            proc.message = f"runs {proc.sha256[:12]}, not the reviewed {sha[:12]}"
    patched = sum(1 for p in result.processes if p.outcome == "applied")
    skipped = sum(1 for p in result.processes if p.outcome in ("gone", "not-loaded"))
    result.converged = not lagging
    if lagging:
        _finish(result, "not-converged", EXIT_RISKY,
                f"{len(lagging)} live process(es) do not run the reviewed sha256: "
                + ", ".join(str(p.pid) for p in lagging))
        return
    tail = f"; {skipped} skipped (not-loaded or gone)" if skipped else ""
    if patched:
        _finish(result, "applied", EXIT_OK, f"{patched} process(es) patched, canary {result.canary}; "
                f"every live process with {module} loaded runs {sha[:12]}{tail}; "
                + fleet_hold([p for p in result.processes if p.outcome == "applied"]))
    else:
        _finish(result, "unchanged", EXIT_OK, f"every live process already runs the disk version{tail}")


def _compensate(fleet: _Fleet, result: RolloutResult, patched: list[ProcessResult], remaining: list[ProcessResult],
                failed: ProcessResult, report: Callable[[ProcessResult], None]) -> RolloutResult:
    for proc in remaining:
        proc.outcome, proc.message = "not-attempted", "rollout stopped before this process"
        report(proc)
    for proc in reversed(patched):
        try:
            patch_id = proc.patch_id

            def undo(c: Client, pid: str | None = patch_id) -> Reply:
                return c.rollback(pid, http_timeout=60.0)

            reply = fleet.call(proc, undo, retry=False)
        except _Gone:
            proc.outcome, proc.message = "gone", "exited before its patch could be rolled back"
            report(proc)
            continue
        except Unreachable as exc:
            reply = Reply(0, {"message": str(exc)})
        if reply.status == 200:
            proc.outcome, proc.message = "rolled-back", f"rolled back by the rollout after process {failed.pid} failed"
            proc.sha256 = proc.previous_sha256
            with contextlib.suppress(_Gone, Unreachable):
                fleet.describe(proc, result.module)  # what it runs now, as it says
        else:
            proc.outcome = "rollback-failed"
            proc.message = f"ROLLBACK FAILED, still running patch {proc.patch_id}: {reply.body.get('message', '')}"
            result.consistent = False
        report(proc)
    result.converged = False  # no live process keeps the reviewed version
    if not result.consistent:
        return _finish(result, "inconsistent", failed.exit_code or EXIT_REJECTED,
                       f"process {failed.pid} failed ({failed.outcome}); SOME ROLLBACKS FAILED, the processes run "
                       "different code: roll back by hand or restart")
    undone = f"; {len(patched)} patched process(es) rolled back" if patched else "; no other process was changed"
    if failed.outcome == "rolled-back":
        outcome = "rolled-back"  # the failing process applied and undid the patch itself
    elif patched:
        outcome = "rolled-back"
    else:
        outcome = failed.outcome if failed.outcome in ("rejected", "unreachable") else "rejected"
    return _finish(result, outcome, failed.exit_code or EXIT_REJECTED,
                   f"process {failed.pid} failed ({failed.outcome}){undone}")


# --------------------------------------------------------------------------- status


def status(socket_dir: str, module: str | None, *, token: str | None, http_timeout: float = 30.0,
           progress: Callable[[ProcessResult], None] | None = None,
           headers: Mapping[str, str] | None = None) -> RolloutResult:
    """Per process: sha256 running, patches in effect; ``converged`` when all run the disk version."""
    result = RolloutResult("status", module, socket_dir)
    report = progress or (lambda p: None)
    fleet = _Fleet(socket_dir, token, http_timeout, headers)
    result.processes = _members(socket_dir)
    running: dict[str, set[str]] = {}
    lagging = unreachable = 0
    for proc in result.processes:
        try:
            body = fleet.describe(proc, module)
        except _Gone:
            proc.outcome, proc.message = "gone", "the process has exited"
            report(proc)
            continue
        except Unreachable as exc:
            proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
            unreachable += 1
            report(proc)
            continue
        stale = {s["module"]: s for s in body.get("stale_modules") or []}
        for name, digest in (body.get("running_sha256") or {}).items():
            if module is None or name == module:
                running.setdefault(name, set()).add(digest)
        if proc.pending:
            proc.outcome = "in-transaction"
            proc.message = f"{', '.join(proc.pending)} is in its checks or probation: it may still roll back"
            lagging += 1
        elif module is not None:
            if proc.sha256 is None:
                proc.outcome, proc.message = "not-loaded", f"has not imported {module}"
            elif module in stale:
                proc.outcome, proc.message = "stale", f"the file on disk is {(stale[module].get('disk_sha256') or '?')[:12]}"
                lagging += 1
            else:
                proc.outcome, proc.message = "current", "runs the file on disk"
        else:
            proc.outcome = "stale" if stale else "current"
            proc.message = ", ".join(sorted(stale)) if stale else "runs the files on disk"
            lagging += bool(stale)
        proc.patch_id = proc.patches[-1] if proc.patches else None
        report(proc)
    split = sorted(name for name, digests in running.items() if len(digests) > 1)
    result.converged = not lagging and not unreachable and not split
    if module is not None and len(running.get(module, ())) == 1:
        result.sha256 = next(iter(running[module]))
    live = sum(1 for p in result.processes if p.outcome not in ("gone", "unreachable"))
    if not result.processes:
        return _finish(result, "unreachable", EXIT_UNREACHABLE, f"no <pid>.sock endpoints in {socket_dir}")
    not_loaded = sum(1 for p in result.processes if p.outcome == "not-loaded")
    gone = sum(1 for p in result.processes if p.outcome == "gone")
    skipped = ", ".join(part for part in (f"{not_loaded} not-loaded" if not_loaded else "",
                                          f"{gone} gone" if gone else "") if part)
    tail = f" ({skipped})" if skipped else ""
    if result.converged:
        if module is None:
            return _finish(result, "converged", EXIT_OK, f"{live} live process(es) run the files on disk{tail}")
        holders = live - not_loaded
        if not holders:
            return _finish(result, "converged", EXIT_OK, f"no live process has {module} loaded{tail}; they import "
                           "the file on disk when they first need it")
        return _finish(result, "converged", EXIT_OK, f"{holders} live process(es) with {module} loaded run "
                       f"{(result.sha256 or '?')[:12]}, the file on disk{tail}")
    parts = []
    busy = sum(1 for p in result.processes if p.outcome == "in-transaction")
    if lagging - busy:
        parts.append(f"{lagging - busy} process(es) run something else than the file on disk")
    if busy:
        parts.append(f"{busy} process(es) in the middle of a transaction")
    if split:
        parts.append("processes run different versions of " + ", ".join(split[:5]))
    if unreachable:
        parts.append(f"{unreachable} live process(es) unreachable")
    return _finish(result, "not-converged", EXIT_UNREACHABLE if unreachable and not (lagging or split) else EXIT_RISKY,
                   "; ".join(parts))


# --------------------------------------------------------------------------- rollback


def _write_record(socket_dir: str, module: str, sha: str, patched: list[ProcessResult]) -> None:
    previous = {p.previous_sha256 for p in patched}
    record = {"module": module, "sha256": sha, "at": time.time(),
              "previous_sha256": previous.pop() if len(previous) == 1 else None,
              "patches": {str(p.pid): p.patch_id for p in patched}}
    fd, tmp = tempfile.mkstemp(prefix=".rollout-", dir=socket_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, os.path.join(socket_dir, RECORD_NAME))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_record(socket_dir: str) -> dict | None:
    try:
        with open(os.path.join(socket_dir, RECORD_NAME), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("module") and record.get("sha256") else None


def rollback(socket_dir: str, *, token: str | None, http_timeout: float = 300.0, timeout: float | None = None,
             progress: Callable[[ProcessResult], None] | None = None,
             headers: Mapping[str, str] | None = None) -> RolloutResult:
    """Undo the last rollout in every live process that runs its patch (processes forked since included)."""
    with _exclusive(socket_dir) as holder:
        if holder is not None:
            return _busy(RolloutResult("rollback", None, socket_dir), holder)
        return _rollback(socket_dir, token=token, http_timeout=http_timeout, timeout=timeout, progress=progress,
                         headers=headers)


def _rollback(socket_dir: str, *, token: str | None, http_timeout: float, timeout: float | None,
              progress: Callable[[ProcessResult], None] | None, headers: Mapping[str, str] | None) -> RolloutResult:
    record = read_record(socket_dir)
    result = RolloutResult("rollback", record["module"] if record else None, socket_dir)
    if record is None:
        return _finish(result, "aborted", EXIT_USAGE, f"no rollout recorded in {socket_dir}")
    module, sha = record["module"], record["sha256"]
    result.sha256 = sha
    report = progress or (lambda p: None)
    fleet = _Fleet(socket_dir, token, http_timeout, headers)
    done: set[int] = set()
    for _ in range(2):  # a second pass for processes that appeared during the first
        todo = _members(socket_dir, done)
        if not todo:
            break
        described = []
        for proc in todo:
            done.add(proc.pid)
            result.processes.append(proc)
            try:
                fleet.describe(proc, module)
                entries = fleet.call(proc, lambda c: c.history()).body.get("entries") or []
            except _Gone:
                proc.outcome, proc.message = "gone", "the process has exited"
                report(proc)
                continue
            except Unreachable as exc:
                proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
                report(proc)
                continue
            described.append((proc, entries))
        described.sort(key=lambda item: (item[0].role != "fork-source", item[0].pid))  # no child born patched
        for proc, entries in described:
            _rollback_one(fleet, proc, module, sha, entries, timeout, record.get("previous_sha256"))
            report(proc)
    failed = [p for p in result.processes if p.outcome in ("unreachable", "rollback-failed", "still-running")]
    undone = sum(1 for p in result.processes if p.outcome == "rolled-back")
    result.converged = not failed
    if failed:
        code = EXIT_UNREACHABLE if all(p.outcome == "unreachable" for p in failed) else EXIT_RISKY
        return _finish(result, "incomplete", code, f"{len(failed)} process(es) still run {sha[:12]}: "
                       + ", ".join(f"{p.pid} ({p.outcome})" for p in failed))
    return _finish(result, "rolled-back" if undone else "unchanged", EXIT_OK,
                   f"{undone} process(es) rolled back to the code they ran before the rollout of {module}; "
                   "if the rolled-out file is still on disk, restore the previous one (or deploy a fixed one): "
                   "until then status shows the module stale")


def _rollback_one(fleet: _Fleet, proc: ProcessResult, module: str, sha: str, entries: list, timeout: float | None,
                  previous: str | None) -> None:
    undone = {e.get("patch_id") for e in entries if e.get("kind") == "rollback"}
    mine = [e for e in entries if e.get("kind") == "patch" and e.get("status") == "applied"
            and e.get("id") not in undone and module in (e.get("modules") or []) and sha in (e.get("sha256") or [])]
    if not mine:
        if proc.sha256 == sha:
            _adopt_restored_file(fleet, proc, module, previous, timeout)
        elif proc.sha256 is None:
            proc.outcome, proc.message = "not-loaded", f"has not imported {module}"
        else:
            proc.outcome, proc.message = "unchanged", "does not run the rollout's version"
        return
    proc.patch_id = mine[-1]["id"]
    body = {"timeout": timeout} if timeout is not None else {}
    try:
        reply = fleet.call(proc, lambda c: c.rollback(proc.patch_id, http_timeout=fleet.http_timeout, **body),
                           timeout=fleet.http_timeout, retry=False)
    except _Gone:
        proc.outcome, proc.message = "gone", "exited during the rollback"
        return
    except Unreachable as exc:
        proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
        return
    proc.http_status = reply.status
    if reply.status == 200:
        proc.outcome, proc.message = "rolled-back", f"patch {proc.patch_id} undone"
        with contextlib.suppress(_Gone, Unreachable):
            fleet.describe(proc, module)
    else:
        proc.outcome, proc.exit_code = "rollback-failed", reply_exit_code("rollback", reply)
        proc.message = reply.body.get("message", "")


def _adopt_restored_file(fleet: _Fleet, proc: ProcessResult, module: str, previous: str | None,
                         timeout: float | None) -> None:
    """A process that imported the rolled-out file itself has no patch to undo: once the operator
    has restored the previous file, applying that file is its rollback."""
    proc.outcome = "still-running"
    proc.message = ("imported the rolled-out file itself (no patch to undo): restore the previous file and run "
                    "rollback again, or restart this process")
    if previous is None:
        return
    try:
        reply = fleet.call(proc, lambda c: c.dry_run(module))
        disk = (((reply.body.get("report") or {}).get("source") or {}).get("disk") or {}).get("sha256")
        if reply.status != 200 or disk != previous or reply.body.get("outcome") != "safe":
            return  # a risky or blocked way back is the operator's call: `rollout apply --allow-risky`
        fields = {"expect_sha256": previous, "timeout": timeout}
        reply = fleet.call(proc, lambda c: c.apply(module, http_timeout=fleet.http_timeout, **fields),
                           timeout=fleet.http_timeout, retry=False)
    except _Gone:
        proc.outcome, proc.message = "gone", "exited during the rollback"
        return
    except Unreachable as exc:
        proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
        return
    if reply.status == 200:
        proc.patch_id = (reply.body.get("patch") or {}).get("id")
        proc.outcome, proc.sha256 = "rolled-back", previous
        proc.message = "imported the rolled-out file; now runs the restored previous file"


# --------------------------------------------------------------------------- helpers


def _finish(result: RolloutResult, outcome: str, code: int, message: str) -> RolloutResult:
    result.outcome, result.exit_code, result.message = outcome, code, message
    return result


def _mark_untouched(result: RolloutResult) -> None:
    for proc in result.processes:
        if proc.outcome == "checked":
            proc.outcome = "untouched"


def _common(values) -> str | None:
    found = set(values)
    return found.pop() if len(found) == 1 else None


def fleet_hold(patched: list[ProcessResult]) -> str:
    """What the patched processes held in all, and which unregistered threads they waited for."""
    holds = [hold for hold in (hold_of({"hold": p.hold}) for p in patched if p.hold) if hold is not None]
    if not holds:
        return "hold not reported"
    workers, units = sum(len(h.workers) for h in holds), sum(h.units for h in holds)
    longest = max(h.seconds for h in holds)
    if workers or units:
        who = " and ".join(part for part in (f"{workers} registered worker(s)" if workers else "",
                                              f"{units} unit(s) of work" if units else "") if part)
        text = f"held {who}, at most {longest:.6f}s in one process"
    else:
        text = f"no registered workers or units of work held (paused at most {longest:.6f}s)"
    waiting = [h for h in holds if h.waited]
    if waiting:
        threads = sum(len(h.waited) for h in waiting)
        text += (f"; waited for {threads} unregistered thread(s) in {len(waiting)} process(es), at most "
                 f"{max(h.wait_seconds for h in waiting):.3f}s")
    return text


def _first_findings(report: dict) -> str:
    findings = report.get("findings") or []
    if not findings:
        return "no change"
    return "; ".join(f"{f.get('code')} {f.get('qualname') or ''}".strip() for f in findings[:3]) + (
        f" (+{len(findings) - 3} more)" if len(findings) > 3 else "")
