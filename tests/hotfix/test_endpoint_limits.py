"""What a peer without the token can consume of the embedded TCP endpoint (issue 12, defect 9).

Real sockets on loopback; every attack is bounded in count and time. Nothing
here passes or fails on speed: deadlines are waited for with generous
bounds, and "does not spin" is a CPU-time bound far above what a waiting
process uses and far below what a spinning one does.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import hotfix.admin
from hotfix.admin import EndpointLimits

TOKEN = "limits-token-" + "z" * 24
WAIT = 30.0  # generous bound on anything the server must do by itself (the machine is shared)


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _request(route: str = "status", token: str | None = TOKEN, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return (f"GET /hotfix/v1/{route} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}"
            "Connection: close\r\n\r\n").encode()


def _read_answer(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything until the server closes (or ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split()[1])


def _body(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def _call(port: int, raw: bytes, source: str | None = None) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source:
            sock.bind((source, 0))
        sock.settimeout(WAIT)
        sock.connect(("127.0.0.1", port))
        sock.sendall(raw)
        return _read_answer(sock)
    finally:
        sock.close()


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` for EOF (or a reset) on a connection we send nothing on."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def serve():
    servers = []

    def make(**kwargs):
        kwargs.setdefault("token", TOKEN)
        server = hotfix.admin.serve(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


# --------------------------------------------------------------------------- header size and count


def test_a_huge_request_head_is_refused_with_431_after_the_limit(serve):
    """http.server alone reads 100 lines of 64 KiB each (about 6 MiB per connection)."""
    server = serve()
    port = _port(server)
    limit = EndpointLimits().max_header_bytes
    big = "".join(f"X-Fill-{i}: {'a' * 1000}\r\n" for i in range(40))  # 40 KiB, each line well under 64 KiB
    answer = _call(port, _request(extra=big))
    assert _status(answer) == 431, answer[:200]
    body = _body(answer)
    assert body["error"] == "headers-too-large" and str(limit) in body["message"]
    # One line larger than the whole budget, and a request line larger than it.
    assert _status(_call(port, _request(extra=f"X-Big: {'b' * 2 * limit}\r\n"))) == 431
    assert _status(_call(port, f"GET /{'c' * 2 * limit} HTTP/1.1\r\n\r\n".encode())) == 431
    assert _status(_call(port, _request("health", token=None))) == 200  # and it keeps serving


def test_too_many_header_lines_are_refused_with_431(serve):
    server = serve(limits=EndpointLimits(max_headers=32))
    many = "".join(f"X-{i}: v\r\n" for i in range(40))  # tiny, but more lines than allowed
    answer = _call(_port(server), _request(extra=many))
    assert _status(answer) == 431, answer[:200]
    few = "".join(f"X-{i}: v\r\n" for i in range(20))
    assert _status(_call(_port(server), _request(extra=few))) == 200


def test_default_header_count_limit_is_below_http_servers_100(serve):
    server = serve()
    many = "".join(f"X-{i}: v\r\n" for i in range(80))
    assert _status(_call(_port(server), _request(extra=many))) == 431


# --------------------------------------------------------------------------- deadlines


def test_slow_headers_are_cut_off_at_the_head_deadline(serve):
    """Slowloris: one byte at a time never trips a per-read timeout; the deadline still ends it."""
    server = serve(limits=EndpointLimits(head_timeout=1.0))
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=WAIT)
    try:
        sock.sendall(b"GET /hotfix/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < WAIT:
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            closed = _closed_by_server(sock, 0.2)
        assert closed, "the server kept a connection that never finished its headers"
    finally:
        sock.close()


def test_an_idle_connection_is_closed_at_the_head_deadline(serve):
    server = serve(limits=EndpointLimits(head_timeout=0.5))
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=WAIT)
    try:
        assert _closed_by_server(sock, WAIT)
    finally:
        sock.close()


def test_a_body_that_stops_is_cut_off_at_the_body_deadline(serve):
    server = serve(limits=EndpointLimits(body_timeout=0.5))
    sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=WAIT)
    try:
        sock.sendall(b"POST /hotfix/v1/dry-run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mod")
        assert _closed_by_server(sock, WAIT)
    finally:
        sock.close()


# --------------------------------------------------------------------------- connections


def test_connections_beyond_the_limit_get_503_without_a_thread_each(serve):
    server = serve(limits=EndpointLimits(max_connections=4, head_timeout=WAIT * 2))
    port = _port(server)
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(4)]
    try:
        # Accepted in order: these come after the four idle ones, so every one is beyond the limit.
        answers = [_call(port, _request()) for _ in range(40)]
        statuses = {_status(a) for a in answers}
        assert statuses == {503}, statuses
        body = _body(answers[0])
        assert body["error"] == "too-many-connections"
        assert b"Retry-After: 1" in answers[0]
        assert threading.active_count() <= threads_before + 4 + 1  # the four idle ones; none per refusal
    finally:
        for sock in idle:
            sock.close()
    # The idle connections are gone: served again (their threads see EOF on their own).
    deadline = time.monotonic() + WAIT
    status = None
    while status != 200 and time.monotonic() < deadline:
        status = _status(_call(port, _request()))
    assert status == 200


def test_status_answers_500_concurrent_requests_or_refuses_them_fast(serve, modules, caplog):
    """500 clients at once, from one thread: every one gets an HTTP answer (200, or 503 beyond the
    connection limit); none is reset or left hanging. The listen backlog was 5."""
    modules.create("def f():\n    return 1\n")
    # Deadlines as generous as the test's own: this loaded machine may leave our single client
    # thread seconds behind, and a deadline cutting it off is not what this test is about.
    slow_machine = EndpointLimits(head_timeout=WAIT * 2, body_timeout=WAIT * 2, write_timeout=WAIT * 2)
    server = serve(allowed_roots=[modules.dir], limits=slow_machine)
    caplog.set_level(logging.DEBUG, logger="hotfix.admin")
    port = _port(server)
    clients = 500
    selector = selectors.DefaultSelector()
    answers: dict[socket.socket, bytearray] = {}
    failures: dict[socket.socket, str] = {}
    try:
        for _ in range(clients):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE)
            answers[sock] = bytearray()
        open_count = clients
        deadline = time.monotonic() + WAIT * 2
        while open_count and time.monotonic() < deadline:
            for key, events in selector.select(1.0):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        sock.send(_request())
                    except OSError as exc:
                        failures[sock] = f"send: {exc}"
                        selector.unregister(sock)
                        open_count -= 1
                        continue
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    failures[sock] = f"recv: {exc}"
                    data = b""
                if data:
                    answers[sock] += data
                else:
                    selector.unregister(sock)
                    open_count -= 1
        statuses: dict[int | None, int] = {}
        for data in answers.values():
            status = _status(bytes(data))
            statuses[status] = statuses.get(status, 0) + 1
        problems = sorted({failures.get(sock, "eof" if not data else "partial") for sock, data in answers.items()
                           if _status(bytes(data)) is None})
        errors = [r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records
                  if r.name == "hotfix.admin"][:5]
        assert set(statuses) <= {200, 503} and sum(statuses.values()) == clients, (
            statuses, problems, server._httpd._counts, errors)
        assert statuses.get(200, 0) > 0, statuses
    finally:
        for sock in answers:
            sock.close()
        selector.close()


# --------------------------------------------------------------------------- failed tokens


def test_token_guessing_is_rate_limited_per_peer_and_audited_in_aggregate(serve, tmp_path):
    audit = tmp_path / "audit.jsonl"
    limits = EndpointLimits(auth_failure_burst=5, auth_failure_refill_seconds=600.0)
    server = serve(audit=str(audit), limits=limits)
    port = _port(server)
    guesses = 200
    statuses = [_status(_call(port, _request(token=f"guess-{i:04d}-" + "q" * 20))) for i in range(guesses)]
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * (guesses - 5)  # the token is not even looked at any more
    refused = _call(port, _request())  # the right token from the same address waits too
    assert _status(refused) == 429 and b"Retry-After: " in refused
    assert _body(refused)["error"] == "too-many-auth-failures"
    # Another address is not affected (Linux routes all of 127/8 to loopback).
    assert _status(_call(port, _request(), source="127.0.0.2")) == 200
    during = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(during) <= 3, during  # not one line per guess
    server.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    summary = [r for r in records if r["outcome"] == "auth-failures"]
    assert len(summary) == 1, records
    assert summary[0]["remote"] == "127.0.0.1"
    assert summary[0]["failures"] + summary[0]["refused"] + 1 == guesses + 1  # all guesses + the refused good one
    assert TOKEN not in audit.read_text()


def test_health_needs_no_token_and_is_never_rate_limited(serve):
    server = serve(limits=EndpointLimits(auth_failure_burst=1, auth_failure_refill_seconds=600.0))
    port = _port(server)
    assert _status(_call(port, _request(token="wrong-" + "w" * 20))) == 401
    assert _status(_call(port, _request(token="wrong-" + "w" * 20))) == 429
    assert _status(_call(port, _request("health", token=None))) == 200


def test_limits_are_validated():
    with pytest.raises(ValueError):
        EndpointLimits(head_timeout=0)
    with pytest.raises(ValueError):
        EndpointLimits(max_connections=0)
    with pytest.raises(ValueError):
        EndpointLimits(max_header_bytes=10)


# --------------------------------------------------------------------------- descriptors


CHILD = textwrap.dedent("""
    import os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    import hotfix.admin
    server = hotfix.admin.serve(token=sys.argv[1])
    print(server.url.rsplit(":", 1)[1], flush=True)
    hog = []
    for line in sys.stdin:
        command = line.strip()
        if command == "open":  # can the service still open files of its own?
            try:
                files = [open(os.devnull) for _ in range(16)]
            except OSError as exc:
                print("open-failed", exc.errno, flush=True)
            else:
                for f in files:
                    f.close()
                print("open-ok", flush=True)
        elif command == "hog":  # the service itself runs out of descriptors
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            print("hogging", len(hog), flush=True)
        elif command == "release":
            for fd in hog:
                os.close(fd)
            hog.clear()
            print("released", flush=True)
        elif command == "quit":
            server.close()
            print("bye", flush=True)
            break
""")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads CPU time from /proc")
def test_descriptor_exhaustion_neither_starves_the_service_nor_spins(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []

    def ask(command: str) -> str:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(command + "\n")
        child.stdin.flush()
        return child.stdout.readline().strip()

    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        # 1. Idle connections (more than the descriptor limit) do not take the service's descriptors.
        for _ in range(200):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        assert ask("open") == "open-ok"
        for sock in clients:
            sock.close()
        clients.clear()
        # 2. The process is out of descriptors: clients wait or get 503, the accept loop does not spin.
        assert ask("hog").startswith("hogging")
        for _ in range(5):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(WAIT)
            sock.connect(("127.0.0.1", port))  # completes in the kernel's backlog
            sock.sendall(_request("health", token=None))
            clients.append(sock)
        before = _cpu_seconds(child.pid)
        time.sleep(5.0)  # the measurement window, not a wait for anything
        used = _cpu_seconds(child.pid) - before
        assert used < 1.0, f"the accept loop used {used:.2f}s of CPU in 5s while out of descriptors"
        # 3. Descriptors come back: the endpoint serves again.
        assert ask("release") == "released"
        assert _status(_call(port, _request("health", token=None))) == 200
        assert ask("quit") == "bye"
        child.wait(WAIT)
    finally:
        for sock in clients:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        out, err = child.communicate()
        if child.returncode not in (0, None):
            print(out, err)
