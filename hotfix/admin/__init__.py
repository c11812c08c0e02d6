"""The hotfix admin endpoint: JSON over HTTP, embedded, or mounted as WSGI/ASGI.

Routes (all under ``/hotfix/v1``, relative to where the app is mounted)::

    GET  /hotfix/v1/health        liveness; the only route without a token
    GET  /hotfix/v1/status        workers, patches in effect, stale modules
    POST /hotfix/v1/dry-run       {"module"} -> verification report (changes nothing)
    POST /hotfix/v1/apply         {"module", "expect_sha256"?, "allow_risky"?, "probation"?, "timeout"?}
    POST /hotfix/v1/rollback      {"patch_id"?, "timeout"?}
    GET  /hotfix/v1/history       every patch and rollback, oldest first
    GET  /hotfix/v1/openapi.json  OpenAPI 3.1 description of these routes

No route accepts code: the new code is always the module's file on disk.
Every route but ``health`` needs ``Authorization: Bearer <token>``. Only
modules already imported and allowed by ``allowed_prefixes`` /
``allowed_roots`` can be touched (404 otherwise). Status codes: 400 bad
input, 401 token, 403 Host header or Unix-socket peer, 404 route or module,
405 method, 409 rejected / rolled back / busy, 413 body over 64 KiB, 415
not JSON, 429 too many wrong tokens from this peer, 431 request head too
large, 503 too many connections (``EndpointLimits``). Every request is audited on the ``hotfix.audit`` logger (and a
JSONL file with ``audit=PATH``).

Entry points::

    server = hotfix.admin.serve(allowed_prefixes=["billing"], checks={"billing": [smoke]})
    server.url, server.token, server.token_file; server.close()
    hotfix.admin.serve_socket_dir("/run/app/hotfix")   # one socket per process, for `hotfix rollout`
    app = hotfix.admin.wsgi_app(...)  /  hotfix.admin.asgi_app(...)   # the same routes, to mount
    hotfix.admin.Client(url, token=...).dry_run("billing")             # a small stdlib client
"""

from ._asgi import ASGIApp, asgi_app
from ._auth import TOKEN_ENV, default_token_file
from ._client import Client, Reply, Unreachable
from ._limits import EndpointLimits
from ._openapi import build_openapi
from ._routes import API_PREFIX, MAX_BODY, ROUTES, SCHEMA_VERSION
from ._server import AdminServer, serve, serve_socket_dir
from ._wsgi import WSGIApp, wsgi_app

__all__ = [
    "API_PREFIX",
    "ASGIApp",
    "AdminServer",
    "Client",
    "EndpointLimits",
    "MAX_BODY",
    "ROUTES",
    "Reply",
    "SCHEMA_VERSION",
    "TOKEN_ENV",
    "Unreachable",
    "WSGIApp",
    "asgi_app",
    "build_openapi",
    "default_token_file",
    "serve",
    "serve_socket_dir",
    "wsgi_app",
]
