"""The ``hotfix`` command: a client for the admin endpoint, plus offline ``diff``.

    hotfix [--url URL | --socket PATH] [--token T | --token-file F] [--json] COMMAND
    hotfix status | history
    hotfix dry-run MODULE
    hotfix apply MODULE [--expect-sha256 SHA] [--allow-risky] [--probation S] [--timeout S]
    hotfix rollback [PATCH_ID]
    hotfix diff OLD.py NEW.py                      (offline: no process needed)
    hotfix rollout --socket-dir DIR apply MODULE   (every process of a pre-fork server, canary first)
    hotfix rollout --socket-dir DIR dry-run MODULE
    hotfix rollout --socket-dir DIR status [MODULE]  (per process: sha256 running, patches; converged?)
    hotfix rollout --socket-dir DIR rollback         (undo the last rollout in every process running it)
    hotfix run [--socket-dir DIR] [options] -- COMMAND [ARGS...]   (launch a service with hotfix in it)
    hotfix ps [--socket-dir DIR]                   local processes serving an endpoint, with their patches

Address: ``--url`` / ``HOTFIX_URL`` (``http://127.0.0.1:PORT``, or
``http+unix://%2Fpath%2Fto.sock``, or a mount point such as
``http://host/ops``) or ``--socket`` / ``HOTFIX_SOCKET``. Token: ``--token``,
``--token-file``, ``HOTFIX_TOKEN``, ``HOTFIX_TOKEN_FILE``, else a file named
``<socket>.token`` or ``token`` next to the socket.

Who asked: every request carries the operator's user and host name and,
with ``--reason`` / ``HOTFIX_REASON``, why (a ticket id); the endpoint audits
them next to what the transport proves (peer address, or Unix peer pid/uid).
``--traceparent`` / ``TRACEPARENT`` (W3C) is forwarded, so the patch's span
joins the caller's trace.

Output: human text on stdout; ``--json`` prints exactly one JSON document on
stdout, always with ``schema_version``, ``command``, ``ok`` and ``exit_code``
(and ``error: {kind, message}`` when it failed); diagnostics go to stderr.

Exit codes: 0 ok / safe / unchanged, 1 risky or rolled back, 2 usage error,
3 blocked or rejected, 4 process unreachable or not authorised.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from verification import compare_files

from ._outcomes import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_RISKY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    VERDICT_EXIT,
)
from ._records import hold_phrase
from ._rollout import ProcessResult, discover, reply_exit_code, rollout
from ._rollout import rollback as rollout_rollback
from ._rollout import status as rollout_status
from ._tracing import valid_traceparent
from ._version import __version__
from .admin._client import Client, Unreachable
from .admin._routes import sha256_problem

SCHEMA_VERSION = 1
_log = logging.getLogger("hotfix.cli")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "hotfix: " is added once when the error is printed; name only the subcommand here
        sub = self.prog.partition(" ")[2]
        raise UsageError(f"{sub}: {message}" if sub else message)


def _common() -> _Parser:
    """Options accepted before or after the subcommand."""
    p = _Parser(add_help=False)
    s = argparse.SUPPRESS
    p.add_argument("--url", default=s, help="endpoint root, e.g. http://127.0.0.1:8765 (env HOTFIX_URL)")
    p.add_argument("--socket", default=s, help="endpoint Unix socket path (env HOTFIX_SOCKET)")
    p.add_argument("--token", default=s, help="bearer token (prefer --token-file or HOTFIX_TOKEN: argv is visible in ps)")
    p.add_argument("--token-file", default=s, help="file holding the token (env HOTFIX_TOKEN_FILE)")
    p.add_argument("--json", action="store_true", default=s, help="print one JSON document on stdout")
    p.add_argument("--http-timeout", type=float, default=s, metavar="S",
                   help="seconds to wait for an answer (default 30; apply/rollback: 300)")
    p.add_argument("-v", "--verbose", action="store_true", default=s, help="log progress to stderr")
    p.add_argument("--reason", default=s, metavar="TEXT",
                   help="why (e.g. a ticket id), recorded in the process's audit (env HOTFIX_REASON)")
    p.add_argument("--traceparent", default=s, metavar="TP",
                   help="W3C trace context to continue in the process (env TRACEPARENT)")
    return p


def _completion(parser: argparse.ArgumentParser) -> None:
    """Shell completion when argcomplete is installed (``eval "$(register-python-argcomplete hotfix)"``)."""
    if "_ARGCOMPLETE" not in os.environ:
        return  # not completing: do not even import it
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _apply_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("module", help="dotted name of a module loaded in the process")
    p.add_argument("--expect-sha256", metavar="SHA", type=_sha256_argument, help="refuse unless the file is exactly this version (from a dry run)")
    p.add_argument("--allow-risky", action="store_true", help="apply a change whose verdict is risky")
    p.add_argument("--probation", type=_positive, metavar="S", help="seconds to watch the patched code")
    p.add_argument("--timeout", type=_positive, metavar="S", help="seconds to wait for workers to park")


def _sha256_argument(text: str) -> str:
    problem = sha256_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="hotfix", parents=[common], description=__doc__.split("\n\n")[0],
                     epilog="Exit codes: 0 ok/safe/unchanged, 1 risky or rolled back, 2 usage error, "
                            "3 blocked or rejected, 4 process unreachable or not authorised.")
    parser.add_argument("--version", action="version", version=f"hotfix {__version__} (Python {sys.version.split()[0]})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("status", parents=[common], help="workers, patches in effect, stale modules")
    sub.add_parser("history", parents=[common], help="every patch and rollback")
    p = sub.add_parser("dry-run", parents=[common], help="verify a module against its file on disk")
    p.add_argument("module")
    _apply_options(sub.add_parser("apply", parents=[common], help="adopt the file on disk (after a dry run)"))
    p = sub.add_parser("rollback", parents=[common], help="undo the latest applied patch, or PATCH_ID")
    p.add_argument("patch_id", nargs="?")
    p.add_argument("--timeout", type=_positive, metavar="S", help="seconds to wait for workers to park")
    p = sub.add_parser("diff", parents=[common], help="offline: classify the edit OLD -> NEW (no process needed)")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--module", help="module name to show in the report")
    p = sub.add_parser("rollout", parents=[common], help="every process of a pre-fork server, canary first")
    p.add_argument("--socket-dir", required=True, help="directory of <pid>.sock endpoints")
    p.add_argument("--canary", type=int, metavar="PID",
                   help="process to patch first (default: the lowest pid that serves traffic)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    _apply_options(actions.add_parser("apply", parents=[common], help="canary, then the rest; undo on failure"))
    d = actions.add_parser("dry-run", parents=[common], help="dry-run in every process")
    d.add_argument("module")
    st = actions.add_parser("status", parents=[common], help="per process: sha256 running, patches; converged?")
    st.add_argument("module", nargs="?")
    rb = actions.add_parser("rollback", parents=[common], help="undo the last rollout in every process running it")
    rb.add_argument("--timeout", type=_positive, metavar="S", help="seconds to wait for workers to park")
    sub.add_parser("run", help="launch a service with hotfix in every Python process: hotfix run --help")
    p = sub.add_parser("ps", parents=[common], help="local processes serving an endpoint, with their patches")
    p.add_argument("--socket-dir", action="append", default=[], metavar="DIR",
                   help="also look for <pid>.sock endpoints here (repeatable; env HOTFIX_SOCKET_DIR)")
    return parser


# --------------------------------------------------------------------------- output


class _Out:
    """Collects the single JSON document, or prints human text as it goes."""

    def __init__(self, command: str, *, as_json: bool) -> None:
        self.json = as_json
        self.doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "command": command}

    def say(self, text: str) -> None:
        if not self.json:
            print(text, flush=True)

    def done(self, code: int, **fields: Any) -> int:
        if self.json:
            self.doc.update(fields)
            self.doc.setdefault("ok", code == EXIT_OK)
            self.doc["exit_code"] = code
            print(json.dumps(self.doc, indent=2, sort_keys=False, default=str), flush=True)
        return code


def _fail(out: _Out, code: int, kind: str, message: str, **fields: Any) -> int:
    print(f"hotfix: {message}", file=sys.stderr, flush=True)
    return out.done(code, error={"kind": kind, "message": message}, **fields)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from ._run._cli import run_main

        return run_main(argv[1:])
    as_json = "--json" in argv
    parser = build_parser()
    _completion(parser)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        out = _Out("usage", as_json=as_json)
        parser.print_usage(sys.stderr)
        return _fail(out, EXIT_USAGE, "usage", str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    opts = vars(args)
    command = opts.get("command")
    out = _Out(command or "usage", as_json=bool(opts.get("json")))
    if command is None:
        parser.print_usage(sys.stderr)
        return _fail(out, EXIT_USAGE, "usage", "a command is required (status, dry-run, apply, rollback, history, diff, rollout)")
    if command == "rollout" and opts.get("action") is None:
        return _fail(out, EXIT_USAGE, "usage", "rollout needs an action: apply MODULE, dry-run MODULE, status [MODULE] "
                     "or rollback")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hotfix: %(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO if opts.get("verbose") else logging.WARNING)
    _log.propagate = False
    try:
        if command == "diff":
            return _diff(out, opts)
        if command == "rollout":
            return _rollout(out, opts)
        if command == "ps":
            from ._ps import ps

            return ps(out, opts)
        return _client_command(out, command, opts)
    except UsageError as exc:
        return _fail(out, EXIT_USAGE, "usage", str(exc))
    finally:
        _log.removeHandler(handler)


def _token(opts: dict, socket_dir: str | None = None, socket_path: str | None = None) -> str | None:
    if opts.get("token"):
        return opts["token"]
    path = opts.get("token_file")
    if not path and os.environ.get("HOTFIX_TOKEN"):
        return os.environ["HOTFIX_TOKEN"].strip()
    path = path or os.environ.get("HOTFIX_TOKEN_FILE")
    if not path and socket_path and os.path.exists(os.path.abspath(socket_path) + ".token"):
        path = os.path.abspath(socket_path) + ".token"  # written by serve(unix_socket=...)
    if not path and socket_dir and os.path.exists(os.path.join(socket_dir, "token")):
        path = os.path.join(socket_dir, "token")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None


def _client(opts: dict) -> Client:
    url, sock = opts.get("url"), opts.get("socket")
    if url and sock:
        raise UsageError("give --url or --socket, not both")
    if not url and not sock:
        url, sock = os.environ.get("HOTFIX_URL"), os.environ.get("HOTFIX_SOCKET")
        if url and sock:
            raise UsageError("HOTFIX_URL and HOTFIX_SOCKET are both set; unset one or pass --url/--socket")
    if not url and not sock:
        raise UsageError("no endpoint: pass --url or --socket (or set HOTFIX_URL / HOTFIX_SOCKET)")
    token = _token(opts, os.path.dirname(os.path.abspath(sock)) if sock else None, sock)
    if not token:
        raise UsageError("no token: pass --token-file (or set HOTFIX_TOKEN / HOTFIX_TOKEN_FILE)")
    try:
        return Client(url, socket_path=sock, token=token, timeout=opts.get("http_timeout") or 30.0,
                      headers=request_headers(opts))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def request_headers(opts: dict) -> dict[str, str]:
    """Who asks and why, and the caller's trace: sent with every request."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    headers = {"X-Hotfix-User": _header_safe(user), "X-Hotfix-Host": _header_safe(socket.gethostname())}
    reason = opts.get("reason") or os.environ.get("HOTFIX_REASON")
    if reason:
        headers["X-Hotfix-Reason"] = _header_safe(reason)
    traceparent = opts.get("traceparent")
    if traceparent is not None and not valid_traceparent(traceparent):
        raise UsageError(f"--traceparent {traceparent[:80]!r} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
    if traceparent is None and os.environ.get("TRACEPARENT"):
        traceparent = os.environ["TRACEPARENT"].strip()
        if not valid_traceparent(traceparent):
            _log.warning("ignoring TRACEPARENT: not a W3C traceparent")
            traceparent = None
    if traceparent:
        headers["traceparent"] = traceparent.strip()
        if os.environ.get("TRACESTATE") and opts.get("traceparent") is None:
            headers["tracestate"] = _header_safe(os.environ["TRACESTATE"])
    return headers


def _header_safe(value: str) -> str:
    """One header line: printable ASCII (other characters escaped), at most 200 characters."""
    text = value.strip()[:200]
    return text if text.isascii() and text.isprintable() else text.encode("unicode_escape").decode("ascii")[:200]


def _client_command(out: _Out, command: str, opts: dict) -> int:
    client = _client(opts)
    out.doc["target"] = client.target
    long_wait = _long_wait(opts)
    _log.info("%s on %s", command, client.target)
    try:
        if command == "status":
            reply = client.status()
        elif command == "history":
            reply = client.history()
        elif command == "dry-run":
            reply = client.dry_run(opts["module"])
        elif command == "apply":
            reply = client.call("POST", "apply", _apply_body(opts), timeout=long_wait)
        elif command == "rollback":
            body = {k: v for k, v in (("patch_id", opts.get("patch_id")), ("timeout", opts.get("timeout"))) if v is not None}
            reply = client.call("POST", "rollback", body, timeout=long_wait)
        else:  # pragma: no cover - argparse restricts the choices
            raise UsageError(f"unknown command {command}")
    except Unreachable as exc:
        hint = ""
        if command in ("apply", "rollback"):
            hint = "; if the request reached the process it may have completed: check `hotfix history` before retrying"
        return _fail(out, EXIT_UNREACHABLE, "unreachable", str(exc) + hint)
    code = reply_exit_code(command, reply)
    out.doc["http_status"] = reply.status
    body = reply.body
    if reply.status == 200:
        _human(out, command, body)
    else:
        _human_error(out, reply.status, body)
    return out.done(code, ok=code == EXIT_OK, result=body)


def _long_wait(opts: dict) -> float:
    """How long to wait for apply/rollback: they answer only after the probation window."""
    if opts.get("http_timeout"):
        return opts["http_timeout"]
    return max(300.0, (opts.get("probation") or 0.0) + (opts.get("timeout") or 0.0) + 120.0)


def _apply_body(opts: dict) -> dict:
    body: dict[str, Any] = {"module": opts["module"]}
    if opts.get("expect_sha256"):
        body["expect_sha256"] = opts["expect_sha256"]
    if opts.get("allow_risky"):
        body["allow_risky"] = True
    for key in ("probation", "timeout"):
        if opts.get(key) is not None:
            body[key] = opts[key]
    return body


def _human(out: _Out, command: str, body: dict) -> None:
    if out.json:
        return
    if command == "status":
        out.say(f"pid {body.get('pid')}, Python {body.get('python')}, endpoint up {body.get('uptime_seconds', 0):.0f}s")
        workers = body.get("workers") or []
        out.say(f"workers: {len(workers)}")
        for w in workers:
            out.say(f"  {w.get('name')}: {w.get('state')}" + (f" at {w['where']}" if w.get("where") else ""))
        active = [p for p in body.get("patches") or [] if p.get("in_effect")]
        out.say(f"patches in effect: {len(active)}")
        for p in active:
            out.say(f"  {p['id']}: {', '.join(p.get('modules') or [])}")
        stale = body.get("stale_modules") or []
        out.say(f"stale modules (disk differs from what runs): {len(stale)}")
        for s in stale:
            disk = (s.get("disk_sha256") or s.get("problem") or "?")[:12]
            out.say(f"  {s['module']}: running {s['running_sha256'][:12]} -> disk {disk}  ({s['path']})")
    elif command == "dry-run":
        out.say(body.get("report_text") or json.dumps(body.get("report"), indent=2))
        sha = (((body.get("report") or {}).get("source") or {}).get("disk") or {}).get("sha256")
        if sha and body.get("outcome") in ("safe", "risky"):
            flag = " --allow-risky" if body.get("outcome") == "risky" else ""
            out.say(f"to apply exactly this version: hotfix apply {body.get('module')} --expect-sha256 {sha}{flag}")
    elif command == "apply":
        patch = body.get("patch") or {}
        if body.get("outcome") == "unchanged":
            out.say(f"{body.get('module')}: unchanged, nothing to apply ({patch.get('id')})")
        else:
            out.say(f"{body.get('module')}: APPLIED as {patch.get('id')} ({hold_phrase(patch)}; "
                    f"probation {patch.get('probation_seconds', 0):.2f}s passed)")
    elif command == "rollback":
        rb = body.get("rollback") or {}
        out.say(f"rolled back {rb.get('patch_id')} ({', '.join(rb.get('modules') or [])}); the previous code runs")
    elif command == "history":
        entries = body.get("entries") or []
        if not entries:
            out.say("no patches yet")
        for e in entries:
            if e.get("kind") == "patch":
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("started_at") or 0))
                out.say(f"{when}  patch     {e.get('id')}  {e.get('status'):<9} {', '.join(e.get('modules') or [])}")
            else:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("at") or 0))
                out.say(f"{when}  rollback  {e.get('patch_id')}  {e.get('reason'):<9} {e.get('detail')}")


def _human_error(out: _Out, status: int, body: dict) -> None:
    if out.json:
        print(f"hotfix: HTTP {status} {body.get('error')}: {body.get('message')}", file=sys.stderr)
        return
    error = body.get("error")
    if error == "rolled-back":
        out.say(f"ROLLED BACK ({body.get('reason')}): {body.get('message')}")
        if body.get("failure"):
            out.say(f"  failure: {body['failure']}")
    elif error == "rejected":
        out.say(f"REJECTED ({body.get('reason')}): {body.get('message')}")
        if body.get("reason") in ("blocked", "risky") and body.get("report_text"):
            out.say(body["report_text"])
    else:
        print(f"hotfix: HTTP {status} {error}: {body.get('message')}", file=sys.stderr)


# --------------------------------------------------------------------------- diff


def _diff(out: _Out, opts: dict) -> int:
    for path in (opts["old"], opts["new"]):
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    report = compare_files(opts["old"], opts["new"], opts.get("module"))
    out.say(str(report))
    code = VERDICT_EXIT.get(report.verdict, EXIT_REJECTED)
    return out.done(code, ok=code == EXIT_OK, verdict=report.verdict, report=report.to_dict())


# --------------------------------------------------------------------------- rollout


def _rollout(out: _Out, opts: dict) -> int:
    socket_dir = opts["socket_dir"]
    if not os.path.isdir(socket_dir):
        raise UsageError(f"{socket_dir}: no such directory")
    action = opts["action"]
    out.doc["action"] = action
    if not discover(socket_dir):
        return _fail(out, EXIT_UNREACHABLE, "unreachable", f"no <pid>.sock endpoints in {socket_dir}; is the server running?")
    token = _token(opts, socket_dir)
    if not token:
        raise UsageError(f"no token: pass --token-file (or set HOTFIX_TOKEN), or put it in {socket_dir}/token")

    def progress(proc: ProcessResult) -> None:
        _log.info("%s %s: %s", proc.pid, proc.outcome, proc.message)

    if action == "status":
        result = rollout_status(socket_dir, opts.get("module"), token=token,
                                http_timeout=opts.get("http_timeout") or 30.0, progress=progress,
                                headers=request_headers(opts))
    elif action == "rollback":
        result = rollout_rollback(socket_dir, token=token, http_timeout=_long_wait(opts), timeout=opts.get("timeout"),
                                  progress=progress, headers=request_headers(opts))
    else:
        result = rollout(socket_dir, opts["module"], token=token, action=action,
                         allow_risky=bool(opts.get("allow_risky")), probation=opts.get("probation"),
                         timeout=opts.get("timeout"), expect_sha256=opts.get("expect_sha256"),
                         canary=opts.get("canary"), http_timeout=_long_wait(opts),
                         progress=progress, headers=request_headers(opts))
    for proc in result.processes:
        detail = proc.message
        sha = proc.disk_sha256 if action == "dry-run" else proc.sha256
        if sha:
            detail = f"sha256 {sha[:12]}  {detail}"
        if action == "status" and proc.patches:
            detail += f"  (patches in effect: {', '.join(proc.patches)})"
        parent = f"ppid {proc.ppid}" if proc.ppid else ""
        out.say(f"{proc.pid:>8}  {proc.role:<11} {parent:<11} {proc.outcome:<15} {proc.patch_id or '-':<24} {detail}")
    target = f" {result.module}" if result.module else ""
    summary = f"rollout {action}{target}: {result.outcome.upper()} - {result.message}" if result.message else \
        f"rollout {action}{target}: {result.outcome.upper()}"
    if result.exit_code == EXIT_OK:
        out.say(summary)
    else:
        if out.json:
            print(f"hotfix: {summary}", file=sys.stderr)
        else:
            out.say(summary)
    if not result.consistent:
        print("hotfix: WARNING: the processes now run different code", file=sys.stderr)
    return out.done(result.exit_code, ok=result.exit_code == EXIT_OK, **result.to_dict())


__all__ = ["EXIT_OK", "EXIT_REJECTED", "EXIT_RISKY", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "main"]
