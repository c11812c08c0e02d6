"""Framework hooks installed at import time, the way auto-instrumentation does it.

A meta path finder watches for a few framework modules; right after one has
been executed, a hook wraps the framework's entry point:

* gunicorn sync and gthread workers: the WSGI app in ``WSGIMiddleware``; the
  arbiter marks its process as a supervisor, each worker as a worker;
* uvicorn: the loaded ASGI app in ``ASGIMiddleware``;
* Django: ``WSGIHandler.__call__`` as a unit of work (counted once under gunicorn);
* Celery: task signals (``connect_celery``);
* asyncio (and uvloop): every event loop's ``run_forever``, so that each loop
  is a registered worker that parks between callbacks (``hotfix._run._loops``).

Only public attributes of those frameworks are wrapped; nothing is imported
that the service does not import itself.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from .._run import _loops, _process
from ._asgi import ASGIMiddleware
from ._unit import UnitOfWork
from ._wsgi import WSGIMiddleware

_lock = threading.Lock()
_enabled = False


def _gunicorn_workers(module: types.ModuleType) -> None:
    worker_cls = module.Worker
    original = worker_cls.load_wsgi

    @functools.wraps(original)
    def load_wsgi(self: Any) -> None:
        original(self)
        _process.set_role("worker", "gunicorn")
        # sync and gthread workers run WSGI; others (uvicorn's) load an ASGI app here
        if type(self).__module__ in ("gunicorn.workers.sync", "gunicorn.workers.gthread"):
            if not getattr(self.wsgi, "hotfix_unit_of_work", False):
                self.wsgi = WSGIMiddleware(self.wsgi)

    worker_cls.load_wsgi = load_wsgi


def _gunicorn_arbiter(module: types.ModuleType) -> None:
    arbiter = module.Arbiter
    original = arbiter.run

    @functools.wraps(original)
    def run(self: Any) -> None:
        _process.set_role("supervisor", "gunicorn")
        return original(self)

    arbiter.run = run


def _uvicorn_config(module: types.ModuleType) -> None:
    config = module.Config
    original = config.load

    @functools.wraps(original)
    def load(self: Any) -> None:
        original(self)
        _process.set_role("worker", "uvicorn")
        if not getattr(self.loaded_app, "hotfix_unit_of_work", False):
            self.loaded_app = ASGIMiddleware(self.loaded_app)

    config.load = load


def _django_wsgi(module: types.ModuleType) -> None:
    handler = module.WSGIHandler
    original = handler.__call__

    @functools.wraps(original)
    def call(self: Any, environ: dict, start_response: Callable[..., Any]) -> Any:
        with UnitOfWork("django request"):
            return original(self, environ, start_response)

    handler.__call__ = call


def _celery_signals(module: types.ModuleType) -> None:
    from ._celery import connect_celery

    connect_celery()


HOOKS: dict[str, Callable[[types.ModuleType], None]] = {
    "gunicorn.workers.base": _gunicorn_workers,
    "gunicorn.arbiter": _gunicorn_arbiter,
    "uvicorn.config": _uvicorn_config,
    "django.core.handlers.wsgi": _django_wsgi,
    "celery.signals": _celery_signals,
    "asyncio.base_events": _loops.hook_asyncio,
    "uvloop": _loops.hook_uvloop,
}


def _run_hook(name: str, module: types.ModuleType) -> None:
    try:
        HOOKS[name](module)
    except Exception as exc:  # a framework version we do not know: run without the hook
        print(f"hotfix: no unit-of-work hook for {name} ({type(exc).__name__}: {exc})", file=sys.stderr)


class _HookFinder:
    """Finds nothing itself; gives the watched modules a loader that runs the hook after executing."""

    _busy = threading.local()  # other wrapping finders (baselines) call back into us

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in HOOKS or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            return self._find(fullname, path, target)
        finally:
            self._busy.name = None

    def _find(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _HookFinder):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is None:
                continue
            loader = spec.loader
            exec_module = getattr(loader, "exec_module", None)
            if exec_module is None:
                return spec

            def run_then_hook(module: types.ModuleType, _exec: Callable[..., None] = exec_module) -> None:
                _exec(module)
                _run_hook(fullname, module)

            loader.exec_module = run_then_hook  # this loader instance only serves this spec
            return spec
        return None

    def invalidate_caches(self) -> None:
        return None


def enable_hooks() -> None:
    """Hook the frameworks above when (or if already) imported. Idempotent."""
    global _enabled
    with _lock:
        if _enabled:
            return
        _enabled = True
        sys.meta_path.insert(0, _HookFinder())
        for name in HOOKS:
            module = sys.modules.get(name)
            if module is not None:
                _run_hook(name, module)
