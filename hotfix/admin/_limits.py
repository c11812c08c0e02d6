"""What an unauthenticated peer may consume of the embedded server, and how it is enforced.

A peer without the token must not be able to take memory, threads or file
descriptors away from the service, nor make the accept loop spin:

- *Request head size*: request line and headers together at most
  ``max_header_bytes``, at most ``max_headers`` header lines; beyond, 431 and
  the connection is closed. (``http.server`` alone accepts 100 lines of
  64 KiB each: about 6 MiB per connection.)
- *Deadlines*: the whole request head must arrive within ``head_timeout``
  of the server starting to wait for it (keep-alive idle time included), the
  body within ``body_timeout`` after the head; then the connection is
  closed. A deadline, not a per-read timeout: a client sending one byte at
  a time cannot stretch it.
- *Connections*: at most ``max_connections`` are served at once (one thread
  each); a connection beyond is answered ``503`` with ``Retry-After`` by a
  single refusing thread and closed, so the excess costs no thread and
  holds its descriptor only briefly. The default is lowered to a quarter
  of the process's descriptor limit, so the endpoint never takes the
  descriptors the service needs for itself.
- *Descriptor exhaustion*: when ``accept()`` fails with EMFILE/ENFILE (the
  process or system is out of descriptors), the accept loop backs off
  (doubling up to one second) instead of retrying at once: the listening
  socket stays readable, so an immediate retry is a busy loop. A reserved
  descriptor is released to accept and refuse one waiting connection
  (503), so clients get an answer instead of hanging in the backlog.
- *Failed tokens*: see ``AuthFailureLimiter`` (429 after ``auth_failure_burst``
  wrong tokens per peer, aggregated audit records).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import json
import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._routes import SCHEMA_VERSION

_log = logging.getLogger("hotfix.admin")

#: accept() errors that mean "out of descriptors or kernel memory", not "this one connection failed".
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@attrs.frozen
class EndpointLimits:
    """Bounds on what a peer may consume of the embedded server (see the module docstring).

    Pass ``limits=EndpointLimits(...)`` to ``hotfix.admin.serve()``; every
    field has a documented default.
    """

    #: Request line plus headers, in bytes (431 beyond).
    max_header_bytes: int = 16 * 1024
    #: Header lines (431 beyond).
    max_headers: int = 64
    #: Seconds for the whole request head to arrive, counted from when the server starts waiting.
    head_timeout: float = 10.0
    #: Seconds for the body to arrive after the head.
    body_timeout: float = 10.0
    #: Seconds a response may take to be written to a slow reader.
    write_timeout: float = 10.0
    #: Connections served at once; ``None``: 64, or a quarter of RLIMIT_NOFILE if that is lower.
    max_connections: int | None = None
    #: Connections beyond the limit being answered 503 at once (beyond: closed without an answer);
    #: ``None``: 512, or a quarter of RLIMIT_NOFILE if that is lower.
    max_refusing: int | None = None
    #: Wrong tokens a peer may send before it is answered 429.
    auth_failure_burst: int = 5
    #: One more attempt per this many seconds after the burst.
    auth_failure_refill_seconds: float = 1.0
    #: Failed-token and refused-connection counts are audited once per window, not per event.
    audit_window: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.max_header_bytes < 256 or self.max_headers < 4:
            raise ValueError("max_header_bytes must be >= 256 and max_headers >= 4")
        for name in ("head_timeout", "body_timeout", "write_timeout", "auth_failure_refill_seconds",
                     "audit_window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if (self.max_refusing is not None and self.max_refusing < 0) or self.auth_failure_burst < 1:
            raise ValueError("max_refusing must be >= 0 and auth_failure_burst >= 1")

    def connection_limit(self) -> int:
        return self.max_connections if self.max_connections is not None else _quarter_of_descriptors(64)

    def refusing_limit(self) -> int:
        return self.max_refusing if self.max_refusing is not None else _quarter_of_descriptors(512)


def _quarter_of_descriptors(cap: int) -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(4, min(cap, soft // 4))


# --------------------------------------------------------------------------- reading under limits


class HeadTooLarge(http.client.LineTooLong):
    """The request head went over ``max_header_bytes`` (``http.server`` answers 431 for this type)."""

    def __init__(self, limit: int) -> None:
        http.client.HTTPException.__init__(self, f"request head larger than {limit} bytes")


class TooManyHeaders(http.client.HTTPException):
    """More header lines than ``max_headers`` (``http.server`` answers 431 for this type)."""


class DeadlineSocketReader(io.RawIOBase):
    """Reads from a socket until an absolute deadline; ``TimeoutError`` after it.

    Each ``recv`` waits only for what is left of the deadline, so the total
    time is bounded however the peer paces its bytes.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            # Past the deadline, take only what already arrived: the deadline bounds the peer's
            # pace, not ours (a thread that waited for the CPU must still read a prompt request).
            self._sock.settimeout(0.0)
            try:
                return self._sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                raise TimeoutError("read deadline passed") from None
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class LimitedRequestReader:
    """The handler's ``rfile``: ``readline`` within the head's byte and line budget, ``read`` for bodies.

    ``http.server`` reads the request line and ``http.client.parse_headers``
    the header lines through ``readline``; the budget makes both stop at the
    limit instead of at 100 lines of 64 KiB.
    """

    def __init__(self, sock: socket.socket, limits: EndpointLimits) -> None:
        self._raw = DeadlineSocketReader(sock)
        self._buffered = io.BufferedReader(self._raw, 8192)
        self._limits = limits
        self._remaining = limits.max_header_bytes
        self._lines = 0

    def begin_head(self) -> None:
        self._raw.deadline = time.monotonic() + self._limits.head_timeout
        self._remaining = self._limits.max_header_bytes
        self._lines = 0

    def begin_body(self) -> None:
        self._raw.deadline = time.monotonic() + self._limits.body_timeout

    def readline(self, limit: int = -1) -> bytes:
        if self._remaining <= 0:
            raise HeadTooLarge(self._limits.max_header_bytes)
        size = self._remaining + 1 if limit is None or limit < 0 else min(limit, self._remaining + 1)
        line = self._buffered.readline(size)
        self._remaining -= len(line)
        self._lines += 1
        if self._remaining < 0:
            raise HeadTooLarge(self._limits.max_header_bytes)
        if self._lines > self._limits.max_headers + 2:  # the request line and the blank line end
            raise TooManyHeaders(f"more than {self._limits.max_headers} header lines")
        return line

    def read(self, size: int = -1) -> bytes:
        return self._buffered.read(size)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._buffered.close()

    @property
    def closed(self) -> bool:
        return self._buffered.closed


# --------------------------------------------------------------------------- answering the excess


def error_bytes(status: int, reason: str, error: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response in the router's JSON shape, with ``Connection: close``."""
    body = json.dumps({"schema_version": SCHEMA_VERSION, "error": error, "message": message},
                      separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Cache-Control: no-store", "Connection: close"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


BUSY_RESPONSE = error_bytes(503, "Service Unavailable", "too-many-connections",
                            "the admin endpoint is serving as many connections as it allows; try again shortly.",
                            retry_after=1)

#: How long a refused connection is drained after its 503, so closing it does not reset the answer away.
REFUSE_LINGER = 1.0


class Refuser:
    """One thread answers every connection beyond the limit with 503 and closes it.

    The answer is written without blocking (it fits any fresh socket's
    buffer), then the socket is half-closed and what the peer sent is drained
    for up to ``REFUSE_LINGER`` seconds: closing with unread data would send
    a reset, which can destroy the 503 before the client reads it. At most
    ``capacity`` sockets are held this way; beyond that a connection is
    closed at once.
    """

    def __init__(self, capacity: int, on_refused: Callable[[], None]) -> None:
        self.capacity = capacity
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._incoming: list[socket.socket] = []
        self._held = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="hotfix-admin-refuser", daemon=True)
        self._thread.start()

    def refuse(self, sock: socket.socket) -> None:
        self._on_refused()
        with self._lock:
            if self._stopped or self._held >= self.capacity:
                take = False
            else:
                take = True
                self._held += 1
                self._incoming.append(sock)
        if not take:
            _close_now(sock)
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)

    def _run(self) -> None:
        deadlines: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    timeout = max(0.0, min(deadlines.values()) - time.monotonic()) if deadlines else None
                    for key, _ in selector.select(timeout):
                        sock = key.fileobj
                        if sock is self._wake_r:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(4096)
                            continue
                        assert isinstance(sock, socket.socket)
                        try:
                            data = sock.recv(65536)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            self._release(selector, deadlines, sock)
                    with self._lock:
                        incoming, self._incoming = self._incoming, []
                        stopped = self._stopped
                    for sock in incoming:
                        self._answer(selector, deadlines, sock)
                    now = time.monotonic()
                    for sock in [s for s, t in deadlines.items() if t <= now]:
                        self._release(selector, deadlines, sock)
                    if stopped:
                        return
            finally:
                for sock in list(deadlines):
                    self._release(selector, deadlines, sock)
                with self._lock:
                    leftover, self._incoming = self._incoming, []
                for sock in leftover:
                    _close_now(sock)
                self._wake_r.close()
                self._wake_w.close()

    def _answer(self, selector: selectors.BaseSelector, deadlines: dict[socket.socket, float],
                sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            _drain_available(sock)  # a request already here is read, so closing does not reset
            sock.send(BUSY_RESPONSE)
            sock.shutdown(socket.SHUT_WR)
            selector.register(sock, selectors.EVENT_READ)
        except OSError:
            with self._lock:
                self._held -= 1
            _close_now(sock)
            return
        deadlines[sock] = time.monotonic() + REFUSE_LINGER

    def _release(self, selector: selectors.BaseSelector, deadlines: dict[socket.socket, float],
                 sock: socket.socket) -> None:
        deadlines.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(sock)
        _close_now(sock)
        with self._lock:
            self._held -= 1


def _drain_available(sock: socket.socket, limit: int = 1 << 20) -> None:
    """Read what a non-blocking socket has already received (up to ``limit`` bytes)."""
    taken = 0
    while taken < limit:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            return
        taken += len(data)


def linger_close(sock: socket.socket, seconds: float, limit: int = 1 << 20) -> None:
    """Half-close, then read and discard what the peer still sends, for at most ``seconds`` and ``limit`` bytes.

    After an error answer with unread request bytes, closing at once would
    send a reset, and the peer's TCP stack may drop our answer before the
    client reads it.
    """
    deadline = time.monotonic() + seconds
    taken = 0
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while taken < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                return
            taken += len(data)


def _close_now(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


# --------------------------------------------------------------------------- descriptor exhaustion


class AcceptBackoff:
    """What the accept loop does when ``accept()`` fails for lack of descriptors.

    Waits (doubling from 10 ms to 1 s, reset by the next successful accept)
    instead of retrying at once, and uses one reserved descriptor to accept
    and refuse a waiting client so it gets a 503 rather than a hang.
    """

    MIN_DELAY = 0.01
    MAX_DELAY = 1.0

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self.delay = 0.0
        self.exhausted = 0  # accept() failures for lack of descriptors, for the audit summary
        self._reserve: int | None = self._open_reserve()
        self._last_warning = 0.0

    @staticmethod
    def _open_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY)
        except OSError:
            return None

    def succeeded(self) -> None:
        self.delay = 0.0
        if self._reserve is None:
            self._reserve = self._open_reserve()

    def failed(self, listener: socket.socket, exc: OSError) -> None:
        """Called in the accept loop after an exhaustion error; returns after the back-off."""
        self.exhausted += 1
        now = time.monotonic()
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            _log.warning("admin endpoint: accept() failed (%s): the process is out of file descriptors;"
                         " backing off (raise the descriptor limit or find the leak)", exc)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                conn, _ = listener.accept()
            except OSError:
                pass
            else:
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(BUSY_RESPONSE)
                _close_now(conn)
            self._reserve = self._open_reserve()
        self.delay = min(self.MAX_DELAY, max(self.MIN_DELAY, self.delay * 2))
        self._stopping.wait(self.delay)

    def close(self) -> None:
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                os.close(self._reserve)
            self._reserve = None
