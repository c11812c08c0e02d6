"""Tokens, token files, Host allowlists and peer credentials.

The bearer token comes from, in order: the ``token`` argument, the
``HOTFIX_TOKEN`` environment variable, the shared ``token`` file of the
socket directory ``hotfix run`` names in ``HOTFIX_SOCKET_DIR`` (when no
``token_file`` is given: a mounted app in every worker of a service then
answers the one token the CLI reads), or it is generated
(``secrets.token_urlsafe(32)``) and written to a 0600 file: ``token_file``
if given, else ``$XDG_RUNTIME_DIR/hotfix/hotfix-<pid>.token``, else
``<tempdir>/hotfix-<uid>/hotfix-<pid>.token`` (a 0700 directory that must
belong to the current user; see ``runtime_dir`` for what happens when
another user created it). The token is compared with
``hmac.compare_digest`` and never logged.

Trust: a token file hotfix adopts (the shared ``token`` of a socket
directory) must be a regular file of ours, closed to others; a socket
directory must be ours and not writable by group or others. Anything else
is refused with a message naming the path and the fix. Token files of
processes that died are removed like their sockets.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterable

#: Environment variable holding the token (server and CLI).
TOKEN_ENV = "HOTFIX_TOKEN"
#: Tokens shorter than this are refused: they could be guessed.
MIN_TOKEN_LENGTH = 16
#: Name of the shared token file in a rollout socket directory.
SHARED_TOKEN_NAME = "token"
SOCKET_DIR_ENV = "HOTFIX_SOCKET_DIR"  # set by ``hotfix run`` (hotfix._run._config.ENV_SOCKET_DIR)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

_log = logging.getLogger("hotfix.admin")


class TokenSource:
    """Where a token came from: ``argument``, ``environment``, ``file``, ``generated`` or ``shared``."""

    ARGUMENT = "argument"
    ENVIRONMENT = "environment"
    FILE = "file"
    GENERATED = "generated"
    SHARED = "shared"  # the socket directory's ``token`` file (``hotfix run``): every process of the service



def new_token() -> str:
    """A random token that never starts with "-" (``hotfix --token -x...`` would read it as a flag)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token

def check_token_strength(token: str) -> str:
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the hotfix token must be a string of at least {MIN_TOKEN_LENGTH} characters")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("the hotfix token must not contain whitespace or control characters")
    return token


class UntrustedPath(PermissionError):
    """A directory or token file that another user could have planted, replaced or read.

    The message names the path, what is wrong and the fix.
    """


def runtime_dir(create: bool = True) -> str:
    """A private directory (0700, owned by us) for token files and the endpoint registry.

    ``$XDG_RUNTIME_DIR/hotfix`` if that is set, else ``<tempdir>/hotfix-<uid>``.
    Another user can create ``<tempdir>/hotfix-<uid>`` first (the temporary
    directory is shared); such a directory is refused with a warning naming
    it and the fix, and ``~/.cache/hotfix/run`` is used instead, which only
    we can create. With ``create=False`` (readers such as ``hotfix ps``)
    nothing is created and the same choice is made.
    """
    problems = []
    for candidate in _runtime_candidates():
        try:
            if create:
                ensure_private_dir(candidate)
            elif os.path.lexists(candidate):
                check_private_dir(candidate)
            return candidate
        except UntrustedPath as exc:
            problems.append(str(exc))
            _log.warning("%s", exc)
    raise UntrustedPath("no private runtime directory for hotfix: " + " ".join(problems))


def _runtime_candidates() -> list[str]:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return [os.path.join(xdg, "hotfix")]
    out = [os.path.join(tempfile.gettempdir(), f"hotfix-{os.getuid()}")]
    home = os.path.expanduser("~")
    if home and home != "~" and os.path.isdir(home):
        out.append(os.path.join(home, ".cache", "hotfix", "run"))
    return out


def check_private_dir(path: str) -> None:
    """Raise ``UntrustedPath`` unless ``path`` is a real directory owned by us that others cannot write."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(f"{path} exists and is not a directory (another user may have created it); "
                            f"hotfix will not use it. Fix: remove {path}, or set XDG_RUNTIME_DIR.")
    if st.st_uid != os.getuid():
        raise UntrustedPath(f"{path} belongs to uid {st.st_uid}, not to uid {os.getuid()}: another user created "
                            f"it, and could read or replace what hotfix puts there. Fix: remove {path} (as its "
                            "owner or root), or set XDG_RUNTIME_DIR.")


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0700, or check that an existing one is ours; make it 0700."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_private_dir(path)
    if os.lstat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def check_shared_dir(path: str) -> None:
    """A directory several of our processes share (``serve_socket_dir``): ours, not writable by others.

    Group or world write access would let another user replace a socket or
    plant a token file that our processes adopt.
    """
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedPath(f"{path} is not a directory; pass a directory for the sockets")
    if st.st_uid != os.getuid():
        raise UntrustedPath(f"{path} belongs to uid {st.st_uid}, not to uid {os.getuid()}: another user could "
                            "replace the sockets or plant a token there. Fix: use a directory you own, e.g. "
                            "mkdir -m 700 under your service's runtime directory.")
    if st.st_mode & 0o022:
        raise UntrustedPath(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): another "
                            f"user could replace the sockets or plant a token there. Fix: chmod 700 {path}.")


def check_token_file(path: str) -> None:
    """Raise ``UntrustedPath`` unless ``path`` is a regular file of ours that only we can read."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedPath(f"the token file {path} is not a regular file (a symlink?); hotfix will not adopt "
                            f"it. Fix: remove {path}; the next process creates a new one.")
    if st.st_uid != os.getuid():
        raise UntrustedPath(f"the token file {path} belongs to uid {st.st_uid}, not to uid {os.getuid()}: "
                            "another user planted it and knows its token. Fix: remove it; the next process "
                            "creates a new one.")
    if st.st_mode & 0o077:
        raise UntrustedPath(f"the token file {path} is readable or writable by others (mode "
                            f"{stat.S_IMODE(st.st_mode):o}), so its token may be known. Fix: remove it (the next "
                            "process creates a new one) and restart the processes that use it.")


def default_token_file() -> str:
    directory = runtime_dir()
    remove_stale_token_files(directory)
    return os.path.join(directory, f"hotfix-{os.getpid()}.token")


def remove_stale_token_files(directory: str) -> list[str]:
    """Remove token files of processes that no longer exist, like their sockets; return their paths.

    ``hotfix-<pid>.token`` (the runtime directory) and ``<pid>.sock.token``
    (next to a socket); a file of another user is left alone.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = _token_file_pid(name)
        if pid is None or pid_alive(pid):
            continue
        path = os.path.join(directory, name)
        try:
            if os.lstat(path).st_uid == os.getuid():
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def _token_file_pid(name: str) -> int | None:
    for prefix, suffix in (("hotfix-", ".token"), ("", ".sock.token")):
        if name.startswith(prefix) and name.endswith(suffix):
            stem = name[len(prefix):len(name) - len(suffix)]
            if stem.isdigit():
                return int(stem)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def write_private_file(path: str, text: str) -> None:
    """Atomically replace ``path`` with a 0600 file holding ``text``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".hotfix-token-", dir=directory)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_token_file(path: str) -> str:
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def shared_token(directory: str) -> tuple[str, str]:
    """The token every process serving in ``directory`` shares: ``(token, path)``.

    The first process creates ``directory/token`` (0600) atomically with a
    hard link, so concurrent workers agree on one token without a race.
    """
    path = os.path.join(directory, SHARED_TOKEN_NAME)
    try:
        check_token_file(path)
        return check_token_strength(read_token_file(path)), path
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".hotfix-token-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(new_token() + "\n")
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if another process won the race: use theirs
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    check_token_file(path)  # the winner of the race may not have been one of ours
    return check_token_strength(read_token_file(path)), path


def resolve_token(token: str | None, token_file: str | os.PathLike | None) -> tuple[str, str, str | None]:
    """``(token, source, written_file)``. ``written_file`` is set only when we generated it."""
    if token is not None:
        return check_token_strength(token), TokenSource.ARGUMENT, None
    env = os.environ.get(TOKEN_ENV)
    if env:
        return check_token_strength(env.strip()), TokenSource.ENVIRONMENT, None
    directory = os.environ.get(SOCKET_DIR_ENV)
    if token_file is None and directory and os.path.isdir(directory):
        # under ``hotfix run`` a mounted app shares its service's token: a request that lands on
        # another worker is then answered (by that worker), not refused with 401
        directory = os.path.abspath(directory)
        check_shared_dir(directory)
        secret, _path = shared_token(directory)
        return secret, TokenSource.SHARED, None
    generated = new_token()
    path = os.fspath(token_file) if token_file is not None else default_token_file()
    write_private_file(path, generated)
    return generated, TokenSource.GENERATED, path


def token_matches(expected: str, authorization: str | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


# --------------------------------------------------------------------------- network


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HostAllowlist:
    """Host header values accepted: each name bare or with the right port.

    ``port=None`` (mounted apps): any port. Blocks DNS rebinding: a browser
    tricked into calling 127.0.0.1 still sends the attacker's host name.
    """

    def __init__(self, names: Iterable[str], port: int | None) -> None:
        self.port = port
        self.names = frozenset(_bracket(n.lower()) for n in names)

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        value = header.strip().lower()
        if value in self.names:
            return True
        name, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or name not in self.names:
            return False
        return self.port is None or int(port) == self.port


def _bracket(name: str) -> str:
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def host_allowlist(bind_host: str, port: int | None, extra: Iterable[str] | None) -> HostAllowlist | None:
    """The Host allowlist for a server bound to ``bind_host:port`` (``None``: no check).

    ``extra`` replaces the default names (loopback names, plus the bind
    address and this machine's names for a non-loopback bind); ``"*"`` in it
    turns the check off.
    """
    if extra is not None:
        names = [extra] if isinstance(extra, str) else list(extra)
        if "*" in names:
            return None
    else:
        names = list(LOOPBACK_NAMES)
        if not is_loopback_host(bind_host):
            names += [bind_host, socket.gethostname(), socket.getfqdn()]
    return HostAllowlist(names, port)


def host_allowed(allowed: HostAllowlist | None, host_header: str | None) -> bool:
    return allowed is None or allowed.allows(host_header)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), else ``None``."""
    return peer_credentials(sock)[1]


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """``(pid, uid)`` of the process at the other end of a Unix socket, from the kernel.

    Linux (``SO_PEERCRED``) gives both; elsewhere ``(None, None)``.
    """
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None, None
    creds = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


# --------------------------------------------------------------------------- failed-auth limiting


class AuthFailureLimiter:
    """Per-peer limit on failed token attempts, with aggregated audit records.

    Each peer (the client's address without its port; the uid for a Unix
    socket) has a bucket of ``burst`` attempts that refills by one every
    ``refill_seconds``. A failed attempt takes one; a peer whose bucket is
    empty is answered 429 without its token being looked at, so guessing
    runs at most one try per ``refill_seconds`` per address. Only the first
    failure of a peer in each ``audit_window`` is audited on its own; the
    rest (failures and 429s) are counted and written as one record per peer
    and window (``outcome="auth-failures"``), so guessing cannot grow the
    audit file by a line per try. At most ``max_peers`` peers are tracked:
    beyond that, new peers share one bucket (``"*"``), which keeps memory
    bounded when the attacker rotates addresses (all of 127.0.0.0/8 is
    loopback).

    The price: a local guesser locks its own address (on loopback: every TCP
    client on this machine) out for a few seconds after it stops. The Unix
    socket endpoint is checked per uid and does not share that fate.
    """

    def __init__(self, *, burst: int = 5, refill_seconds: float = 1.0, audit_window: float = 60.0,
                 max_peers: int = 4096) -> None:
        if burst < 1 or refill_seconds <= 0 or audit_window <= 0 or max_peers < 1:
            raise ValueError("burst and max_peers must be >= 1; refill_seconds and audit_window > 0")
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.audit_window = audit_window
        self.max_peers = max_peers
        self._lock = threading.Lock()
        self._peers: dict[str, _PeerFailures] = {}

    @staticmethod
    def peer_key(remote: str, transport: str) -> str:
        if transport == "tcp":
            host, sep, port = remote.rpartition(":")
            return host if sep and port.isdigit() else remote
        return remote

    def _peer(self, key: str, now: float) -> _PeerFailures:
        peer = self._peers.get(key)
        if peer is None:
            if len(self._peers) >= self.max_peers:
                key = "*"
                peer = self._peers.get(key)
            if peer is None:
                peer = self._peers[key] = _PeerFailures(key, float(self.burst), now, now)
        return peer

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """Seconds until this peer may try a token again, or ``None`` if it may now.

        A refused attempt is counted for the aggregated audit record.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            peer = self._peers.get(key)
            if peer is None and len(self._peers) >= self.max_peers:
                peer = self._peers.get("*")
            if peer is None:
                return None
            peer.refill(now, self.burst, self.refill_seconds)
            if peer.tokens >= 1:
                return None
            peer.refused += 1
            peer.last = time.time()
            return (1 - peer.tokens) * self.refill_seconds

    def failed(self, key: str, now: float | None = None) -> bool:
        """Record a failed attempt; ``True`` if it is to be audited on its own (first in its window)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            peer = self._peer(key, now)
            peer.refill(now, self.burst, self.refill_seconds)
            peer.tokens = max(0.0, peer.tokens - 1)
            peer.last = time.time()
            if not peer.audited:
                peer.audited = True
                return True
            peer.failures += 1
            return False

    def due(self, now: float | None = None, *, everything: bool = False) -> list[dict]:
        """Aggregated records of windows that ended (all pending ones with ``everything``); forgets
        peers that are idle and refilled."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            for key, peer in list(self._peers.items()):
                if not everything and now - peer.window_start < self.audit_window:
                    continue
                if peer.failures or peer.refused:
                    out.append({"remote": key, "failures": peer.failures, "refused": peer.refused,
                                "since_ts": peer.first_wall, "last_ts": peer.last})
                peer.refill(now, self.burst, self.refill_seconds)
                if peer.tokens >= self.burst:
                    del self._peers[key]
                else:
                    peer.start_window(now)
        return out


class _PeerFailures:
    __slots__ = ("audited", "failures", "first_wall", "key", "last", "refilled_at", "refused", "tokens",
                 "window_start")

    def __init__(self, key: str, tokens: float, refilled_at: float, window_start: float) -> None:
        self.key = key
        self.tokens = tokens
        self.refilled_at = refilled_at
        self.start_window(window_start)

    def start_window(self, now: float) -> None:
        self.window_start = now
        self.audited = False
        self.failures = 0
        self.refused = 0
        self.first_wall = self.last = time.time()

    def refill(self, now: float, burst: int, refill_seconds: float) -> None:
        self.tokens = min(float(burst), self.tokens + (now - self.refilled_at) / refill_seconds)
        self.refilled_at = now
