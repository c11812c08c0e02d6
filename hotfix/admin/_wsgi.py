"""The admin routes as a WSGI application, to mount in an existing service."""

from __future__ import annotations

import http
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._audit import AuditTarget
from ._router import Check, Request, Response, Router, make_router
from ._routes import MAX_BODY
from ._siblings import annotate, guard

StartResponse = Callable[..., Any]


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class WSGIApp:
    """A WSGI callable serving the admin routes; ``token``/``token_file`` as for ``serve``."""

    def __init__(self, router: Router, token_file: str | None, allow_single_process: bool = False,
                 socket_dir: str | None = None) -> None:
        self.router = router
        self.token = router._token
        self.token_file = token_file
        self.allow_single_process = allow_single_process
        self.socket_dir = socket_dir

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        router = self.router
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_") and isinstance(value, str)}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        remote = environ.get("REMOTE_ADDR") or ""
        if environ.get("REMOTE_PORT"):
            remote = f"{remote}:{environ['REMOTE_PORT']}"
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        base = Request(method, path, headers, b"", remote, "wsgi")
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ.get("wsgi.input")
        if raw_length:
            if not raw_length.isdigit() or len(raw_length) > 18:
                return self._send(start_response, router.refuse(base, 400, "bad-request", "invalid Content-Length."))
            length = int(raw_length)
            if length > router.max_body:
                return self._send(start_response, router.refuse(
                    base, 413, "payload-too-large", f"the body is larger than {router.max_body} bytes."))
            body = stream.read(length) if length and stream is not None else b""
        elif environ.get("wsgi.input_terminated") and stream is not None:
            body = stream.read(router.max_body + 1)  # chunked: the server tells us where it ends
        else:
            body = b""
        request = Request(method, path, headers, body, remote, "wsgi")
        refused = guard(router, request, self.allow_single_process, self.socket_dir)
        if refused is not None:  # one worker of a multi-process server: it would patch itself only
            return self._send(start_response, refused)
        return self._send(start_response, annotate(router.handle(request), request, self.socket_dir))

    @staticmethod
    def _send(start_response: StartResponse, response: Response) -> list[bytes]:
        body = response.body()
        start_response(_status_line(response.status), response.headers(body))
        return [body]


def wsgi_app(
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
) -> WSGIApp:
    """The admin routes as a WSGI app (``.token``, ``.token_file``). Mount it, e.g. at ``/ops``.

    The routes are then ``/ops/hotfix/v1/...``. The hosting server's bind and
    TLS apply; ``allowed_hosts`` adds a Host header check (off by default).
    Apply is synchronous: give the hosting server a thread that may block for
    the probation window.

    In a multi-process server the app answers from one worker: apply and
    rollback are refused (409, ``reason: siblings``) when sibling processes
    are found (``socket_dir`` or ``HOTFIX_SOCKET_DIR``, or the process tree),
    unless ``allow_single_process=True``; then the answer's ``scope`` names
    the one process changed and its siblings. Use ``hotfix rollout`` instead.
    """
    router, written = make_router(token=token, token_file=token_file, allowed_prefixes=allowed_prefixes,
                                  allowed_roots=allowed_roots, audit=audit, checks=checks, probation=probation,
                                  timeout=timeout, check_timeout=check_timeout, max_body=max_body, allowed_hosts=allowed_hosts,
                                  metrics_public=metrics_public)
    return WSGIApp(router, written, allow_single_process, os.fspath(socket_dir) if socket_dir else None)
