"""ASGI middleware: each HTTP request is an async unit of work (``safepoints.async_critical``).

* ``http``: a pause waits for the requests in flight on the loop (the loop
  keeps running them) and holds requests that arrive meanwhile (they await,
  the loop is not blocked) until the swap is done. So a request sees all old
  or all new code, even when it awaits between two calls into a patched
  module. When the last request ends the loop parks between callbacks (under
  ``hotfix run``, where every loop is a registered worker) or leaves the pause
  alone (with only the middleware: code outside requests is not paused).
* ``websocket``: not a unit. A connection lives for minutes or hours and would
  hold every patch for that long (or make every patch time out). While one is
  open the loop is a registered worker (``safepoints.asyncio_worker``): a
  pause parks the loop *between* callbacks, and the connection's code
  continues in the new version after its next ``await``.
* ``lifespan``: passed through untouched (it lasts as long as the server).
  Under ``hotfix run`` the loop is registered anyway, so code outside requests
  (lifespan tasks, background tasks) parks between callbacks.

Limit: a streaming HTTP response (server-sent events, a long download) is a
unit until it ends; a patch waits for it up to its timeout and is then
refused (``pause-timeout``, naming the loop and its units in flight).

A request that itself applies a patch (hotfix's mounted admin app) is not
waited for: the pause runs in a thread that carries the request's context
(``asyncio.to_thread``), and a pause never waits for its own unit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import safepoints

from .._run import _process

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class ASGIMiddleware:
    """Wrap an ASGI app: ``app = ASGIMiddleware(app)``. ``hotfix run`` adds it for uvicorn."""

    hotfix_unit_of_work = True

    def __init__(self, app: ASGIApp, name: str = "asgi loop") -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "http":
            async with safepoints.async_critical(name=self.name):
                _process.unit_started()
                try:
                    await self.app(scope, receive, send)
                finally:
                    _process.unit_finished()
        elif kind == "websocket":
            async with safepoints.asyncio_worker(name=self.name):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
