"""WSGI middleware: each request is a unit of work (a ``critical()`` section of a registered thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._unit import UnitOfWork

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


class _Body:
    """The app's response iterable; the unit ends when the server closes it (as WSGI requires)."""

    __slots__ = ("_result", "_unit")

    def __init__(self, result: Iterable[bytes], unit: UnitOfWork) -> None:
        self._result = result
        self._unit = unit

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._unit.exit()


class WSGIMiddleware:
    """Wrap a WSGI app: ``application = WSGIMiddleware(application)``.

    A patch waits for requests in flight (up to its timeout) and holds new
    ones only for the swap. ``hotfix run`` adds it for gunicorn and Django.
    """

    hotfix_unit_of_work = True

    def __init__(self, app: WSGIApp, name: str = "wsgi request") -> None:
        self.app = app
        self.name = name

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        unit = UnitOfWork(self.name)
        unit.enter()
        try:
            result = self.app(environ, start_response)
        except BaseException:
            unit.exit()
            raise
        if isinstance(result, list | tuple):  # produced already: nothing more runs app code
            unit.exit()
            return result
        return _Body(result, unit)

    def __getattr__(self, name: str) -> Any:  # the wrapped app's attributes stay reachable
        return getattr(self.app, name)
