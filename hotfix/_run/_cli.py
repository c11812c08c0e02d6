"""Argument parsing for ``hotfix run``: every option has an environment twin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import attrs

from ._config import CheckSpec, ConfigError, RunConfig
from ._launch import default_socket_dir, exec_service, service_env

USAGE = "hotfix run [--socket-dir DIR] [options] -- COMMAND [ARGS...]"
EPILOG = """\
Every option has an environment twin, read by each process of the service:
  --socket-dir HOTFIX_SOCKET_DIR, --prefix HOTFIX_PREFIXES (comma-separated),
  --root HOTFIX_ROOTS (os.pathsep-separated), --audit-log HOTFIX_AUDIT_LOG,
  --probation HOTFIX_PROBATION, --timeout HOTFIX_TIMEOUT, --check HOTFIX_CHECKS
  (comma-separated), --cover-executors HOTFIX_COVER_EXECUTORS=1,
  --no-integrations HOTFIX_INTEGRATIONS=0, --log-level HOTFIX_LOG_LEVEL.
HOTFIX_DISABLED=1 is the kill switch: the command runs without hotfix.

Then, from another shell:  hotfix rollout --socket-dir DIR status | dry-run M | apply M | rollback
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # NoReturn
        self.print_usage(sys.stderr)
        print(f"hotfix run: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hotfix run", usage=USAGE, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Launch a service with hotfix in every Python process: baselines for the "
                            "application's code, an endpoint per process in the socket directory, units of "
                            "work (requests, tasks) as safepoints. No application changes.")
    p.add_argument("--socket-dir", metavar="DIR", help="one <pid>.sock per process and a shared token file "
                   "(default: $HOTFIX_SOCKET_DIR, else a new directory under the runtime dir)")
    p.add_argument("--prefix", action="append", metavar="NAME",
                   help="application module prefix (repeatable); default: every module outside the standard "
                        "library and site-packages")
    p.add_argument("--root", action="append", metavar="DIR", help="application directory (repeatable)")
    p.add_argument("--audit-log", metavar="PATH", help="append-only JSONL audit file")
    p.add_argument("--probation", type=float, metavar="S", help="default probation window of apply")
    p.add_argument("--timeout", type=float, metavar="S", help="default seconds to wait for workers to park")
    p.add_argument("--check", action="append", metavar="[MODULE=]PKG.MOD:FN",
                   help="a check run after each apply (of MODULE, or of every module), resolved in each process")
    p.add_argument("--cover-executors", action="store_true", default=None,
                   help="every ThreadPoolExecutor job is a unit of work")
    p.add_argument("--no-integrations", action="store_true", default=None,
                   help="do not hook gunicorn, uvicorn, Django and Celery")
    p.add_argument("--log-level", metavar="LEVEL", help="hotfix's log level on stderr (e.g. INFO)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the service's command line, after --")
    return p


def config_from_args(args: argparse.Namespace, env: dict[str, str]) -> RunConfig:
    config = RunConfig.from_env(env)
    changes: dict[str, object] = {}
    if args.socket_dir:
        changes["socket_dir"] = os.path.abspath(args.socket_dir)
    if args.prefix:
        changes["prefixes"] = tuple(p for item in args.prefix for p in item.split(",") if p)
    if args.root:
        changes["roots"] = tuple(os.path.abspath(r) for r in args.root)
    if args.audit_log:
        changes["audit_log"] = os.path.abspath(args.audit_log)
    for name in ("probation", "timeout"):
        value = getattr(args, name)
        if value is not None:
            if not value >= 0 or value == float("inf"):
                raise ConfigError(f"--{name}", f"must be a finite number >= 0, not {value}")
            changes[name] = value
    if args.check:
        changes["checks"] = tuple(CheckSpec.parse(c) for item in args.check for c in item.split(",") if c)
    if args.cover_executors:
        changes["cover_executors"] = True
    if args.no_integrations:
        changes["integrations"] = False
    if args.log_level:
        changes["log_level"] = args.log_level
    config = attrs.evolve(config, **changes)  # type: ignore[arg-type]
    if not config.socket_dir and not config.disabled:
        config = attrs.evolve(config, socket_dir=default_socket_dir())
    return config


def run_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        build_parser().print_usage(sys.stderr)
        print("hotfix run: a command is required after --", file=sys.stderr)
        return 2
    env = dict(os.environ)
    try:
        config = config_from_args(args, env)
    except ConfigError as exc:
        print(f"hotfix run: {exc}", file=sys.stderr)
        return 2
    if config.disabled:
        print("hotfix run: HOTFIX_DISABLED is set; running the command without hotfix", file=sys.stderr)
    else:
        assert config.socket_dir is not None
        os.makedirs(config.socket_dir, mode=0o700, exist_ok=True)
        print(f"hotfix run: endpoints in {config.socket_dir} "
              f"(hotfix rollout --socket-dir {config.socket_dir} status)", file=sys.stderr, flush=True)
    return exec_service(command, service_env(config, env))
