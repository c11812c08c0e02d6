"""The embedded admin server: ``http.server`` in a daemon thread, TCP or Unix socket."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import socketserver
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import _registry
from ._audit import AuditTarget
from ._auth import (
    AuthFailureLimiter,
    check_shared_dir,
    host_allowlist,
    is_loopback_host,
    peer_credentials,
    pid_alive,
    remove_stale_token_files,
    shared_token,
)
from ._limits import (
    EXHAUSTION_ERRNOS,
    REFUSE_LINGER,
    AcceptBackoff,
    EndpointLimits,
    HeadTooLarge,
    LimitedRequestReader,
    Refuser,
    linger_close,
)
from ._router import Check, Request, Response, Router, make_router
from ._routes import API_PREFIX, MAX_BODY

_log = logging.getLogger("hotfix.admin")

#: How often the serving loop looks at its shutdown flag (bounds ``close()`` latency).
POLL_INTERVAL = 0.1
#: Longest path a Unix socket can be bound to (``sun_path`` minus the NUL).
MAX_UNIX_PATH = 107
#: Headers that must not appear twice (request smuggling, auth confusion).
_SINGLE_HEADERS = ("host", "authorization", "content-length", "content-type", "transfer-encoding")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # no HTTP/0.9: every answer has a status line and headers
    server_version = "hotfix-admin"
    sys_version = ""
    server: _TCPServer | _UnixServer
    rfile: Any  # a LimitedRequestReader

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader that enforces the head budget and deadlines
        self.rfile = LimitedRequestReader(self.connection, self.server.limits)
        self.linger = False  # set when we close after an error answer, with request bytes maybe unread
        self.peer_refused = False
        self.peer_pid: int | None = None
        self.peer_uid: int | None = None
        if isinstance(self.server, _UnixServer):
            self.peer_pid, uid = peer_credentials(self.connection)
            self.peer_uid = uid
            self.peer_refused = uid is not None and uid != os.getuid()
            self.peer = f"unix:pid={self.peer_pid},uid={uid}" if uid is not None else "unix"
        else:
            host, port = self.client_address[:2]
            self.peer = f"{host}:{port}"

    def handle_one_request(self) -> None:
        """``http.server``'s loop body, with the head read under a byte budget and a deadline."""
        self.rfile.begin_head()
        try:
            try:
                self.raw_requestline = self.rfile.readline(self.server.limits.max_header_bytes + 1)
            except HeadTooLarge:
                self.requestline = self.request_version = self.command = ""
                self.send_error(431)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():  # headers are read through self.rfile: 431 past the budget
                return
            self.rfile.begin_body()
            getattr(self, "do_" + self.command)()
            self.wfile.flush()
        except TimeoutError:
            # Deadline for the head or body (or a write timeout): drop the connection, counted.
            self.server.count("timed_out")
            self.close_connection = True

    def finish(self) -> None:
        super().finish()
        if self.linger:
            linger_close(self.connection, REFUSE_LINGER)

    def version_string(self) -> str:
        return self.server_version

    def address_string(self) -> str:
        return self.peer

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        _log.debug("%s %s", self.peer, format % args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method reaches the router (which answers 401/405)
            return self._serve
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed request lines and headers: a JSON answer, audited, connection closed."""
        limits = self.server.limits
        if code == 431:
            error = "headers-too-large"
            message = (f"request head too large: at most {limits.max_header_bytes} bytes and "
                       f"{limits.max_headers} header lines.")
        else:
            error = {501: "method-not-allowed"}.get(code, "bad-request")
        request = Request(getattr(self, "command", "") or "", getattr(self, "path", "") or "", {}, b"", self.peer, self.server.transport)
        self._send(self.server.router.refuse(request, code, error, message or "malformed request."), close=True)

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _serve(self) -> None:
        router = self.server.router
        headers = self._headers()
        base = Request(self.command, self.path, headers, b"", self.peer, self.server.transport,
                       self.peer_pid, self.peer_uid)
        if self.peer_refused:
            self._send(router.refuse(base, 403, "forbidden", "this Unix socket only serves its own user."), close=True)
            return
        for name in _SINGLE_HEADERS:
            if len(self.headers.get_all(name) or ()) > 1:
                self._send(router.refuse(base, 400, "bad-request", f"duplicate {name} header."), close=True)
                return
        if "transfer-encoding" in headers:
            self._send(router.refuse(base, 400, "bad-request", "chunked bodies are not accepted; send Content-Length."), close=True)
            return
        raw_length = headers.get("content-length", "0").strip() or "0"
        if not raw_length.isdigit() or len(raw_length) > 18:
            self._send(router.refuse(base, 400, "bad-request", "invalid Content-Length."), close=True)
            return
        length = int(raw_length)
        if length > router.max_body:
            self._send(router.refuse(base, 413, "payload-too-large", f"the body is larger than {router.max_body} bytes."), close=True)
            return
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            return
        self._send(router.handle(Request(self.command, self.path, headers, body, self.peer, self.server.transport,
                                         self.peer_pid, self.peer_uid)))

    def _send(self, response: Response, close: bool = False) -> None:
        self.connection.settimeout(self.server.limits.write_timeout)  # the read deadline no longer applies
        body = response.body()
        self.send_response(response.status)
        for name, value in response.headers(body):
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
            self.linger = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Limited:
    """Connection bound, refusals, accept back-off and aggregated counts, for both server kinds.

    A mix-in before ``socketserver.ThreadingMixIn``: ``process_request`` runs in the accept loop.
    """

    router: Router
    limits: EndpointLimits
    socket: Any  # the listening socket (socketserver's attribute)
    # The listen backlog. socketserver's 5 overflows under a burst of clients: the kernel then drops
    # their handshakes (and, with SYN cookies, may reset them later) while the accept loop, which
    # shares the GIL with the handler threads, catches up. Queued connections cost no descriptor.
    request_queue_size = 1024

    def init_limits(self, limits: EndpointLimits) -> None:
        self.limits = limits
        self.max_connections = limits.connection_limit()
        self._active = 0
        self._active_lock = threading.Lock()
        self._stopping = threading.Event()
        self._backoff = AcceptBackoff(self._stopping)
        self._counts: dict[str, int] = {}
        self._window_start = time.monotonic()
        self._refuser = Refuser(limits.refusing_limit(), lambda: self.count("refused_busy"))

    @property
    def active_connections(self) -> int:
        with self._active_lock:
            return self._active

    def count(self, what: str) -> None:
        with self._active_lock:
            self._counts[what] = self._counts.get(what, 0) + 1

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            conn, addr = self.socket.accept()
        except OSError as exc:
            if exc.errno in EXHAUSTION_ERRNOS:
                self._backoff.failed(self.socket, exc)  # waits: the listener stays readable
            raise
        self._backoff.succeeded()
        return conn, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            admit = self._active < self.max_connections
            if admit:
                self._active += 1
        if not admit:
            self._refuser.refuse(request)
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            with self._active_lock:
                self._active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self._active_lock:
                self._active -= 1

    def service_actions(self) -> None:
        """Every poll interval, in the accept loop: write the aggregated audit records that are due."""
        self.router.flush_auth_audit()
        if time.monotonic() - self._window_start >= self.limits.audit_window:
            self.flush_counts()

    def flush_counts(self) -> None:
        with self._active_lock:
            counts, self._counts = self._counts, {}
            exhausted, self._backoff.exhausted = self._backoff.exhausted, 0
            self._window_start = time.monotonic()
        if exhausted:
            counts["descriptors_exhausted"] = exhausted
        if counts:
            self.router.audit({"ts": time.time(), "method": None, "path": None, "route": None, "status": None,
                               "remote": None, "transport": getattr(self, "transport", None), "module": None,
                               "outcome": "connections-refused", "patch_id": None, "duration_ms": 0.0, **counts})

    def stop_limits(self) -> None:
        self._stopping.set()

    def close_limits(self) -> None:
        self._refuser.stop()
        self._backoff.close()
        self.flush_counts()
        self.router.flush_auth_audit(everything=True)


class _TCPServer(_Limited, http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    transport = "tcp"

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn(): a DNS lookup
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("admin connection error from %s", client_address, exc_info=True)


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(_Limited, socketserver.ThreadingUnixStreamServer):
    """Binds under a private temporary name, chmods 0600, then renames into place.

    So the socket is never reachable with looser permissions, and its
    appearing at the final path means it is already listening.
    """

    daemon_threads = True
    block_on_close = False
    transport = "unix"

    def server_bind(self) -> None:
        final = str(self.server_address)
        self._final = final
        self._tmpdir: str | None = tempfile.mkdtemp(prefix=".", dir=os.path.dirname(final))  # 0700
        tmp = os.path.join(self._tmpdir, "s")
        if len(tmp.encode()) > MAX_UNIX_PATH:
            os.rmdir(self._tmpdir)
            self._tmpdir = None
            tmp = final
        self.socket.bind(tmp)
        os.chmod(tmp, 0o600)
        self._bound = tmp

    def server_activate(self) -> None:
        super().server_activate()
        if self._tmpdir is not None:
            os.replace(self._bound, self._final)
            os.rmdir(self._tmpdir)
        self.server_address = self._final
        self.inode = os.stat(self._final).st_ino

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("admin connection error", exc_info=True)

    def remove_socket(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self._final).st_ino == self.inode:
                os.unlink(self._final)


def _check_socket_path(path: str) -> None:
    if len(path.encode()) > MAX_UNIX_PATH:
        raise ValueError(f"Unix socket path {path!r} is longer than {MAX_UNIX_PATH} bytes; use a shorter directory")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return  # stale socket: it will be replaced
    finally:
        probe.close()
    raise OSError(f"{path} is in use by a running server")


class AdminServer:
    """A running admin endpoint. ``url`` is the server root (routes under ``/hotfix/v1``).

    For a Unix socket, ``url`` is ``http+unix://<percent-encoded path>`` and
    ``socket_path`` the path. ``token_file`` is set when the token was
    generated and written by hotfix (it is removed again by ``close()``).
    """

    def __init__(self, httpd: _TCPServer | _UnixServer, router: Router, url: str, token: str,
                 token_file: str | None, owns_token_file: bool, socket_path: str | None) -> None:
        self._httpd = httpd
        self.router = router
        self.url = url
        self.token = token
        self.token_file = token_file
        self._owns_token_file = owns_token_file
        self.socket_path = socket_path
        self._closed = False
        self._registration = _registry.register(url, socket_path, token_file)  # for `hotfix ps`
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                                        name="hotfix-admin", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, remove the Unix socket and the generated token file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _registry.unregister(self._registration)
        self._httpd.stop_limits()  # ends an accept back-off wait at once
        self._httpd.shutdown()
        self._thread.join(timeout)
        self._httpd.server_close()
        self._httpd.close_limits()
        if isinstance(self._httpd, _UnixServer):
            self._httpd.remove_socket()
        if self._owns_token_file and self.token_file:
            with contextlib.suppress(OSError):
                os.unlink(self.token_file)

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AdminServer {self.url}>"


def serve(
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allowed_prefixes: Iterable[str] | None = None,
    allowed_roots: Iterable[str | os.PathLike] | None = None,
    unix_socket: str | os.PathLike | None = None,
    token_file: str | os.PathLike | None = None,
    allow_non_loopback: bool = False,
    allowed_hosts: Iterable[str] | None = None,
    audit: AuditTarget = None,
    checks: Mapping[str, Iterable[Check]] | None = None,
    probation: float | None = None,
    timeout: float | None = None,
    check_timeout: float | None = None,
    max_body: int = MAX_BODY,
    metrics_public: bool = False,
    limits: EndpointLimits | None = None,
) -> AdminServer:
    """Start the admin endpoint in a daemon thread and return its handle.

    ``token``: the bearer token; default ``$HOTFIX_TOKEN``, else generated and
    written (0600) to ``token_file`` or ``$XDG_RUNTIME_DIR/hotfix/hotfix-<pid>.token``
    (``<tempdir>/hotfix-<uid>/`` without ``XDG_RUNTIME_DIR``).
    ``host``/``port``: TCP bind, loopback only unless ``allow_non_loopback``;
    requests must carry an allowed Host header (``allowed_hosts`` replaces the
    default list; ``["*"]`` disables the check).
    ``unix_socket``: serve on this Unix socket (0600, same-uid peers only) instead of TCP; a
    generated token goes to ``<socket>.token`` unless ``token_file`` says otherwise.
    ``allowed_prefixes``/``allowed_roots``: which loaded modules may be touched
    (default: application code, i.e. not the standard library or site-packages).
    ``checks``: ``{"module": [callable, ...]}`` run after each apply of that module.
    ``probation``/``timeout``: defaults for apply when the request gives none;
    ``check_timeout``: seconds each server-side check may run (default 10) before the patch is rolled back.
    ``audit``: a JSONL file path or a callable receiving each audit record.
    ``metrics_public``: serve ``/hotfix/v1/metrics`` without the token (counts only, for a
    scraper that cannot hold it).
    ``limits``: what a peer may consume (header size and count, read deadlines,
    connections, failed tokens); see ``EndpointLimits`` for the defaults.
    """
    limits = limits if limits is not None else EndpointLimits()
    if unix_socket is None:
        if not allow_non_loopback and not is_loopback_host(host):
            raise ValueError(f"refusing to bind the admin endpoint to non-loopback {host!r}; pass allow_non_loopback=True "
                             "(and put TLS in front of it) if you really mean it")
        if host == "localhost":
            host = "127.0.0.1"
    if unix_socket is not None and token_file is None:
        token_file = os.path.abspath(os.fspath(unix_socket)) + ".token"  # where `hotfix --socket` looks
    router, written = make_router(token=token, token_file=token_file, allowed_prefixes=allowed_prefixes,
                                  allowed_roots=allowed_roots, audit=audit, checks=checks, probation=probation,
                                  timeout=timeout, check_timeout=check_timeout, max_body=max_body, metrics_public=metrics_public)
    httpd: _TCPServer | _UnixServer | None = None
    try:
        if unix_socket is not None:
            path = os.path.abspath(os.fspath(unix_socket))
            _check_socket_path(path)
            httpd = _UnixServer(path, _Handler)
            url = "http+unix://" + path.replace("%", "%25").replace("/", "%2F")
            socket_path: str | None = path
        else:
            cls = _TCP6Server if ":" in host else _TCPServer
            httpd = cls((host, port), _Handler)
            bound_port = httpd.server_address[1]
            router.allowed_hosts = host_allowlist(host, bound_port, allowed_hosts)
            url = f"http://{'[' + host + ']' if ':' in host else host}:{bound_port}"
            socket_path = None
        router.server_url = url + API_PREFIX if unix_socket is None else None
        router.auth_limiter = AuthFailureLimiter(burst=limits.auth_failure_burst,
                                                 refill_seconds=limits.auth_failure_refill_seconds,
                                                 audit_window=limits.audit_window)
        httpd.router = router
        httpd.init_limits(limits)
    except BaseException:
        if httpd is not None:
            httpd.server_close()
        if written:
            with contextlib.suppress(OSError):
                os.unlink(written)
        raise
    server = AdminServer(httpd, router, url, router._token, written, written is not None, socket_path)
    _log.info("hotfix admin endpoint on %s (token %s)", url,
              f"in {written}" if written else "from the " + router.token_source)
    return server


def serve_socket_dir(directory: str | os.PathLike, **kwargs: Any) -> AdminServer:
    """Serve this process's endpoint on ``<directory>/<pid>.sock`` (for ``hotfix rollout``).

    Every process of a pre-fork server calls this (in gunicorn: the
    ``post_fork`` hook). Unless a token is given (argument or
    ``HOTFIX_TOKEN``), they share ``<directory>/token``, created 0600 by the
    first one; the CLI reads it by default. Sockets left by dead processes
    are removed. Other keyword arguments are passed to :func:`serve`.
    """
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    check_shared_dir(directory)  # ours, and nobody else can write there
    remove_stale_sockets(directory)
    if kwargs.get("token") is None and not os.environ.get("HOTFIX_TOKEN"):
        kwargs["token"], _ = shared_token(directory)
    return serve(unix_socket=os.path.join(directory, f"{os.getpid()}.sock"), **kwargs)


def remove_stale_sockets(directory: str) -> list[str]:
    """Remove ``<pid>.sock`` files (and their ``.token`` files) whose process no longer exists;
    return their paths."""
    removed = remove_stale_token_files(directory)
    for name in os.listdir(directory):
        stem, ext = os.path.splitext(name)
        if ext != ".sock" or not stem.isdigit():
            continue
        if not pid_alive(int(stem)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed
