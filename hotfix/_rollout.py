"""Multi-process rollout: patch every process of a pre-fork server, canary first.

Each process serves its own endpoint on ``<socket-dir>/<pid>.sock``
(``hotfix.admin.serve_socket_dir``). A rollout:

1. *Preflight* (changes nothing): dry-run the module in every process.
   Abort if a live process is unreachable or refuses the token, the module
   is unknown or blocked, the processes see different files on disk, or the
   change is risky without ``allow_risky``. Sockets of dead processes are
   skipped; processes already running the disk version need nothing.
2. *Canary*: apply in one process (``canary`` pid, else the lowest pid),
   pinned to the sha256 every process reported. Apply is synchronous, so
   its checks and probation window are over when it answers.
3. *The rest*, one at a time, same pin. On the first failure, roll back
   every process patched so far (newest first) by patch id, and stop.

Exit codes are the CLI's: 0 every process runs the new code, 1 risky or
rolled back, 3 rejected/blocked, 4 a process unreachable or not authorised.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import attrs

from ._outcomes import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RISKY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_code_for_reply,
)
from .admin._client import Client, Reply, Unreachable
from .admin._server import pid_alive


@attrs.define
class ProcessResult:
    """One process in a rollout; ``outcome`` is what happened to it last."""

    pid: int
    socket: str
    role: str = "member"  # canary | member
    outcome: str = "pending"
    verdict: str | None = None
    sha256: str | None = None
    patch_id: str | None = None
    http_status: int | None = None
    message: str = ""
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.define
class RolloutResult:
    action: str
    module: str
    socket_dir: str
    outcome: str = "pending"  # applied | unchanged | aborted | rolled-back | inconsistent | dry-run
    exit_code: int = EXIT_OK
    consistent: bool = True
    sha256: str | None = None
    canary: int | None = None
    message: str = ""
    processes: list[ProcessResult] = attrs.field(factory=list)

    def to_dict(self) -> dict:
        return {
            "action": self.action, "module": self.module, "socket_dir": self.socket_dir,
            "outcome": self.outcome, "exit_code": self.exit_code, "consistent": self.consistent,
            "sha256": self.sha256, "canary": self.canary, "message": self.message,
            "processes": [p.to_dict() for p in self.processes],
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
) -> RolloutResult:
    """Run a rollout (``action="apply"``) or a fleet dry run (``action="dry-run"``)."""
    result = RolloutResult(action, module, socket_dir)
    report = progress or (lambda p: None)
    members: list[tuple[ProcessResult, Client]] = []
    for pid, path in discover(socket_dir):
        proc = ProcessResult(pid, path)
        result.processes.append(proc)
        members.append((proc, Client(socket_path=path, token=token, timeout=min(http_timeout, 30.0))))
    if not members:
        return _finish(result, "aborted", EXIT_UNREACHABLE, f"no <pid>.sock endpoints in {socket_dir}")

    # 1. preflight: dry-run everywhere, change nothing
    live: list[tuple[ProcessResult, Client]] = []
    abort: tuple[int, str] | None = None
    for proc, client in members:
        try:
            reply = client.dry_run(module)
        except Unreachable as exc:
            if not pid_alive(proc.pid):
                proc.outcome, proc.message = "stale", "socket of a process that no longer exists; skipped"
                report(proc)
                continue
            proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
            abort = abort or (EXIT_UNREACHABLE, f"process {proc.pid} is unreachable")
            report(proc)
            continue
        proc.http_status = reply.status
        if reply.status != 200:
            proc.outcome = "refused"
            proc.message = reply.body.get("message", "")
            proc.exit_code = reply_exit_code("dry-run", reply)
            abort = abort or (proc.exit_code, f"process {proc.pid}: {proc.message}")
            report(proc)
            continue
        rep = reply.body.get("report") or {}
        proc.verdict = reply.body.get("outcome")
        proc.sha256 = ((rep.get("source") or {}).get("disk") or {}).get("sha256")
        proc.exit_code = reply_exit_code("dry-run", reply)
        proc.outcome = "checked"
        proc.message = _first_findings(rep)
        live.append((proc, client))
        if action == "dry-run":
            proc.outcome = proc.verdict or "?"
            report(proc)
    if action == "dry-run":
        result.exit_code = max((p.exit_code for p in result.processes), default=EXIT_OK)
        result.sha256 = _common_sha(live)
        result.outcome = "dry-run"
        verdicts = sorted({p.verdict or "?" for p, _ in live})
        result.message = (f"{len(live)} process(es) answered: {', '.join(verdicts) or 'none'}"
                          + (f", disk sha256 {result.sha256}" if result.sha256 else ""))
        if abort:
            result.message = abort[1]
        elif result.sha256 is None and len({p.sha256 for p, _ in live}) > 1:
            result.exit_code, result.message = EXIT_REJECTED, "processes see different files on disk"
        return result
    if abort:
        _mark_untouched(result)
        return _finish(result, "aborted", abort[0], "preflight failed, nothing was changed: " + abort[1])
    if not live:
        return _finish(result, "aborted", EXIT_UNREACHABLE, "no live process to patch")
    shas = {p.sha256 for p, _ in live}
    if len(shas) != 1 or None in shas:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_REJECTED, "processes see different files on disk "
                       f"({', '.join(sorted(s[:12] for s in shas if s))}); nothing was changed")
    sha = shas.pop()
    result.sha256 = sha
    if expect_sha256 and expect_sha256 != sha:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_REJECTED, f"the file's sha256 is {sha[:12]}, not the reviewed "
                       f"{expect_sha256[:12]}; nothing was changed")
    verdicts = {p.verdict for p, _ in live}
    if "blocked" in verdicts:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_REJECTED, "the change is blocked; nothing was changed (restart instead)")
    if "risky" in verdicts and not allow_risky:
        _mark_untouched(result)
        return _finish(result, "aborted", EXIT_RISKY, "the change is risky; review the dry run and pass "
                       "--allow-risky; nothing was changed")
    todo = [(p, c) for p, c in live if p.verdict != "unchanged"]
    for proc, _ in live:
        if proc.verdict == "unchanged":
            proc.outcome, proc.message = "unchanged", "already runs the disk version"
            report(proc)
    if not todo:
        return _finish(result, "unchanged", EXIT_OK, "every process already runs the disk version")
    if canary is not None:
        chosen = [m for m in todo if m[0].pid == canary]
        if not chosen:
            _mark_untouched(result)
            return _finish(result, "aborted", EXIT_USAGE, f"canary pid {canary} is not among the processes to patch")
        todo.remove(chosen[0])
        todo.insert(0, chosen[0])
    todo[0][0].role = "canary"
    result.canary = todo[0][0].pid

    # 2. canary, then 3. the rest
    patched: list[tuple[ProcessResult, Client]] = []
    fields = {"expect_sha256": sha, "allow_risky": allow_risky or None, "probation": probation, "timeout": timeout}
    for index, (proc, client) in enumerate(todo):
        try:
            reply = client.apply(module, http_timeout=http_timeout, **fields)
        except Unreachable as exc:
            proc.outcome, proc.message, proc.exit_code = "unreachable", str(exc), EXIT_UNREACHABLE
            report(proc)
            return _compensate(result, patched, todo[index + 1:], proc, report)
        proc.http_status = reply.status
        proc.exit_code = reply_exit_code("apply", reply)
        body = reply.body
        if reply.status == 200:
            patch = body.get("patch") or {}
            proc.outcome = body.get("outcome", "applied")
            proc.patch_id = patch.get("id")
            proc.message = f"workers held {patch.get('stall_seconds', 0):.6f}s, probation {patch.get('probation_seconds', 0):.2f}s"
            if proc.outcome == "applied":
                patched.append((proc, client))
            report(proc)
            continue
        proc.outcome = body.get("outcome") or body.get("error") or f"http-{reply.status}"
        proc.patch_id = body.get("patch_id")
        proc.message = body.get("message", "")
        report(proc)
        return _compensate(result, patched, todo[index + 1:], proc, report)
    return _finish(result, "applied", EXIT_OK, f"{len(patched)} process(es) patched, canary {result.canary}")


def _compensate(result: RolloutResult, patched: list, remaining: list, failed: ProcessResult,
                report: Callable[[ProcessResult], None]) -> RolloutResult:
    for proc, _ in remaining:
        proc.outcome, proc.message = "not-attempted", "rollout stopped before this process"
        report(proc)
    for proc, client in reversed(patched):
        try:
            reply = client.rollback(proc.patch_id, http_timeout=60.0)
        except Unreachable as exc:
            reply = Reply(0, {"message": str(exc)})
        if reply.status == 200:
            proc.outcome, proc.message = "rolled-back", f"rolled back by the rollout after process {failed.pid} failed"
        else:
            proc.outcome = "rollback-failed"
            proc.message = f"ROLLBACK FAILED, still running patch {proc.patch_id}: {reply.body.get('message', '')}"
            result.consistent = False
        report(proc)
    outcome = "rolled-back" if result.consistent else "inconsistent"
    undone = f"; {len(patched)} patched process(es) rolled back" if patched else "; no other process was changed"
    if not result.consistent:
        undone = "; SOME ROLLBACKS FAILED, the processes run different code: roll back by hand or restart"
    return _finish(result, outcome, failed.exit_code or EXIT_REJECTED,
                   f"process {failed.pid} failed ({failed.outcome}){undone}")


def _finish(result: RolloutResult, outcome: str, code: int, message: str) -> RolloutResult:
    result.outcome, result.exit_code, result.message = outcome, code, message
    return result


def _mark_untouched(result: RolloutResult) -> None:
    for proc in result.processes:
        if proc.outcome == "checked":
            proc.outcome = "untouched"


def _common_sha(live: list) -> str | None:
    shas = {p.sha256 for p, _ in live}
    return shas.pop() if len(shas) == 1 else None


def _first_findings(report: dict) -> str:
    findings = report.get("findings") or []
    if not findings:
        return "no change"
    return "; ".join(f"{f.get('code')} {f.get('qualname') or ''}".strip() for f in findings[:3]) + (
        f" (+{len(findings) - 3} more)" if len(findings) > 3 else "")
