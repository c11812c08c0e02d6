"""The admin routes as an ASGI application (asyncio), to mount in an existing service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping

from ._audit import AuditTarget
from ._router import Check, Request, Response, Router, make_router
from ._routes import MAX_BODY
from ._siblings import annotate, guard

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
_SINGLE_HEADERS = ("host", "authorization", "content-length", "content-type", "transfer-encoding")


class ASGIApp:
    """An ASGI callable serving the admin routes; ``token``/``token_file`` as for ``serve``.

    Requests run in the event loop's default executor (``asyncio.to_thread``):
    an apply blocks for its probation window and must not block the loop
    (which, when it is a safepoints worker, has to park for the swap).
    """

    def __init__(self, router: Router, token_file: str | None, allow_single_process: bool = False,
                 socket_dir: str | None = None) -> None:
        self.router = router
        self.token = router._token
        self.token_file = token_file
        self.allow_single_process = allow_single_process
        self.socket_dir = socket_dir

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            return
        router = self.router
        raw_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        headers = dict(raw_headers)
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else ""
        method = scope.get("method", "GET")
        base = Request(method, path, headers, b"", remote, "asgi")
        names = [k for k, _ in raw_headers]
        for name in _SINGLE_HEADERS:
            if names.count(name) > 1:
                return await self._send(send, router.refuse(base, 400, "bad-request", f"duplicate {name} header."))
        raw_length = headers.get("content-length", "").strip()
        if raw_length and (not raw_length.isdigit() or len(raw_length) > 18):
            return await self._send(send, router.refuse(base, 400, "bad-request", "invalid Content-Length."))
        if raw_length and int(raw_length) > router.max_body:
            return await self._send(send, router.refuse(
                base, 413, "payload-too-large", f"the body is larger than {router.max_body} bytes."))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > router.max_body:
                return await self._send(send, router.refuse(
                    base, 413, "payload-too-large", f"the body is larger than {router.max_body} bytes."))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        request = Request(method, path, headers, b"".join(chunks), remote, "asgi")
        # to_thread: the work carries this request's context, so a pause it takes does not wait
        # for the request itself when the request is an async unit of work (ASGIMiddleware)
        refused = await asyncio.to_thread(guard, router, request, self.allow_single_process, self.socket_dir)
        if refused is not None:  # one worker of a multi-process server: it would patch itself only
            await self._send(send, refused)
            return
        response = await asyncio.to_thread(router.handle, request)
        await self._send(send, annotate(response, request, self.socket_dir))

    @staticmethod
    async def _send(send: Send, response: Response) -> None:
        body = response.body()
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers(body)]})
        await send({"type": "http.response.body", "body": body})


def asgi_app(
    token: str | None = None,
    *,
    allowed_prefixes: Iterable[str] | None = None,
    allowed_roots: Iterable[str | os.PathLike] | None = None,
    token_file: str | os.PathLike | None = None,
    allowed_hosts: Iterable[str] | None = None,
    audit: AuditTarget = None,
    checks: Mapping[str, Iterable[Check]] | None = None,
    probation: float | None = None,
    timeout: float | None = None,
    check_timeout: float | None = None,
    max_body: int = MAX_BODY,
    metrics_public: bool = False,
    allow_single_process: bool = False,
    socket_dir: str | os.PathLike | None = None,
) -> ASGIApp:
    """The admin routes as an ASGI app (``.token``, ``.token_file``); same options as ``wsgi_app``."""
    router, written = make_router(token=token, token_file=token_file, allowed_prefixes=allowed_prefixes,
                                  allowed_roots=allowed_roots, audit=audit, checks=checks, probation=probation,
                                  timeout=timeout, check_timeout=check_timeout, max_body=max_body, allowed_hosts=allowed_hosts,
                                  metrics_public=metrics_public)
    return ASGIApp(router, written, allow_single_process, os.fspath(socket_dir) if socket_dir else None)


