"""What the ``sitecustomize`` of ``hotfix run`` does in every Python process of the service.

1. ``hotfix.install()`` with the configured scope (baselines for application
   code only), the audit log, the framework hooks (``hotfix.integrations``).
2. Serve the admin endpoint on ``<socket-dir>/<pid>.sock`` (shared ``token``).
3. After ``fork()``, in the child: let go of the parent's listening socket
   (without removing the parent's socket file) and serve the child's own.

Nothing here may break the service: any failure is logged on stderr and the
process runs on without hotfix's endpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable

import hotfix

from ._config import CheckSpec, RunConfig

_log = logging.getLogger("hotfix.run")
_config: RunConfig | None = None
_server = None  # hotfix.admin.AdminServer serving this process's socket
_server_pid: int | None = None
_start_dir: str | None = None  # the working directory the process started in


class NamedCheck:
    """A check given as ``pkg.mod:fn``: imported when it first runs, in the process that runs it.

    Resolving at startup would import the application from ``sitecustomize``,
    before the server had a chance to set itself up.
    """

    def __init__(self, spec: CheckSpec) -> None:
        self.spec = spec
        self.__qualname__ = spec.target
        self._fn: Callable[[], object] | None = None

    def __call__(self) -> object:
        if self._fn is None:
            module_name, _, attr = self.spec.target.partition(":")
            obj: object = _import_check_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            if not callable(obj):
                raise TypeError(f"check {self.spec.target} is not callable")
            self._fn = obj
        return self._fn()

    def __repr__(self) -> str:
        return f"<check {self.spec}>"


def _import_check_module(name: str) -> object:
    """Import a check's module; also from the directory the service was started in.

    Some servers put it on ``sys.path`` only while they load the app (Celery's
    ``-A``), so a check next to the app would not be found later.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if _start_dir is None or _start_dir in sys.path or exc.name != name.partition(".")[0]:
            raise
    sys.path.append(_start_dir)
    try:
        return importlib.import_module(name)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(_start_dir)


def _checks(config: RunConfig) -> dict[str, list[NamedCheck]]:
    out: dict[str, list[NamedCheck]] = {}
    for spec in config.checks:
        out.setdefault(spec.module or "*", []).append(NamedCheck(spec))
    return out


def _setup_logging(level: str | None) -> None:
    if not level:
        return
    logger = logging.getLogger("hotfix")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("hotfix[%(process)d] %(levelname)s %(message)s"))
        logger.addHandler(handler)


def boot(config: RunConfig | None = None) -> bool:
    """Set hotfix up in this process from the environment. Returns False when disabled."""
    global _config, _start_dir
    config = config or RunConfig.from_env()
    if config.disabled:
        return False
    _config = config
    with contextlib.suppress(OSError):
        _start_dir = os.getcwd()
    _setup_logging(config.log_level)
    hotfix.install(prefixes=config.prefixes, roots=config.roots)
    if config.audit_log:
        hotfix.configure(audit_log=config.audit_log)
    if config.integrations:
        from hotfix.integrations import enable_hooks

        enable_hooks()
    if config.cover_executors:
        from hotfix.integrations import cover_executors

        cover_executors()
    if config.socket_dir:
        # The endpoint thread idles in select() and is replaced in the child
        # after fork (hotfix's own locks are reset there): the interpreter's
        # warning about forking a multi-threaded process does not apply to it.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*multi-threaded.*fork")
        _start_endpoint()
        os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_close_endpoint)
    return True


def _start_endpoint() -> None:
    global _server, _server_pid
    config = _config
    if config is None or not config.socket_dir:
        return
    from hotfix.admin import serve_socket_dir

    try:
        _server = serve_socket_dir(config.socket_dir, allowed_prefixes=config.prefixes, allowed_roots=config.roots,
                                   checks=_checks(config), probation=config.probation, timeout=config.timeout,
                                   audit=config.audit_log)
        _server_pid = os.getpid()
    except Exception as exc:  # the service runs on without the endpoint
        _server = None
        print(f"hotfix: no admin endpoint in pid {os.getpid()} ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)


def _after_fork_in_child() -> None:
    global _server
    inherited = _server
    _server = None
    if inherited is not None:
        # The parent's serving thread does not exist here; only its listening
        # socket was copied. Close our copy; the file stays, it is the parent's.
        with contextlib.suppress(OSError):
            inherited._httpd.socket.close()
        inherited._closed = True
    _start_endpoint()


def _close_endpoint() -> None:
    if _server is not None and _server_pid == os.getpid():
        with contextlib.suppress(Exception):
            _server.close(timeout=1.0)


def endpoint():  # AdminServer | None, imported lazily
    """This process's endpoint (``None`` if not serving)."""
    return _server if _server_pid == os.getpid() else None
