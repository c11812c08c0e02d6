"""ASGI middleware: the event loop is a registered worker while a request is in flight.

A pause then parks the loop *between* callbacks (see ``safepoints.asyncio_worker``):
no request code runs during the swap. A request that awaits across the swap
continues in the new code after its ``await`` (a ``critical()`` section over
awaits would let one slow request hold every patch).
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
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        _process.unit_started()
        try:
            async with safepoints.asyncio_worker(name=self.name):
                await self.app(scope, receive, send)
        finally:
            _process.unit_finished()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
