"""Audit identity: what the operator says (user, host, reason) next to what the transport proves."""

from __future__ import annotations

import getpass
import json
import os
import socket

import pytest

import hotfix
import hotfix.admin
from hotfix._cli import main

TOKEN = "identity-token-" + "i" * 24
V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"


@pytest.fixture
def audit_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    hotfix.configure(audit_log=path)
    yield path
    hotfix.configure(audit_log=None)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _me() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def test_cli_over_a_unix_socket_records_user_host_reason_and_peer_credentials(modules, short_dir, audit_file, capsys):
    mod = modules.create(V1)
    modules.write(mod, V2)
    requests: list[dict] = []
    sock = os.path.join(short_dir(), "s.sock")
    server = hotfix.admin.serve(unix_socket=sock, allowed_roots=[modules.dir], audit=requests.append)
    try:
        # no --token: serve(unix_socket=...) wrote <socket>.token, where `hotfix --socket` looks
        assert server.token_file == sock + ".token"
        code = main(["--socket", sock, "--reason", "INC-4711 fix rounding", "apply", mod.__name__, "--probation", "0"])
        assert code == 0, capsys.readouterr()
    finally:
        server.close()
    [req] = [r for r in requests if r["route"] == "apply"]
    assert req["transport"] == "unix"
    assert req["peer_pid"] == os.getpid() and req["peer_uid"] == os.getuid()  # the kernel's word (SO_PEERCRED)
    assert req["operator_user"] == _me() and req["operator_host"] == socket.gethostname()
    assert req["operator_reason"] == "INC-4711 fix rounding"
    applied = [r for r in _records(audit_file) if r["step"] == "applied"]
    assert len(applied) == 1
    actor = applied[0]["actor"]
    assert f"{_me()}@{socket.gethostname()}" in actor
    assert f"unix pid={os.getpid()} uid={os.getuid()}" in actor and "INC-4711" in actor
    hotfix.rollback()


def test_tcp_records_the_peer_address_and_flags_nothing_it_cannot_know(modules, audit_file):
    mod = modules.create(V1)
    modules.write(mod, V2)
    requests: list[dict] = []
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir], audit=requests.append)
    try:
        reply = hotfix.admin.Client(server.url, token=TOKEN).apply(mod.__name__, probation=0)  # no identity headers
        assert reply.status == 200
    finally:
        server.close()
    [req] = [r for r in requests if r["route"] == "apply"]
    assert req["transport"] == "tcp" and req["remote"].startswith("127.0.0.1:")
    assert "operator_user" not in req and "peer_pid" not in req
    [applied] = [r for r in _records(audit_file) if r["step"] == "applied"]
    assert applied["actor"] == f"admin endpoint: tcp {req['remote']}"
    hotfix.rollback()


def test_claims_are_log_safe(modules):
    requests: list[dict] = []
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir], audit=requests.append)
    try:
        client = hotfix.admin.Client(server.url, token=TOKEN,
                                     headers={"X-Hotfix-User": "eve\x1b[31m", "X-Hotfix-Reason": "r" * 500})
        assert client.status().status == 200
    finally:
        server.close()
    [req] = [r for r in requests if r["route"] == "status"]
    assert "\x1b" not in req["operator_user"] and req["operator_user"].startswith("eve")
    assert len(req["operator_reason"]) == 200


def test_rollout_forwards_who_and_why_to_every_process(modules, short_dir, capsys):
    mod = modules.create(V1)
    modules.write(mod, V2)
    requests: list[dict] = []
    sockdir = short_dir()
    server = hotfix.admin.serve_socket_dir(sockdir, allowed_roots=[modules.dir], audit=requests.append)
    try:
        code = main(["rollout", "--socket-dir", sockdir, "--reason", "CHG-42", "apply", mod.__name__, "--probation", "0"])
        assert code == 0, capsys.readouterr()
    finally:
        server.close()
    applies = [r for r in requests if r["route"] == "apply"]
    assert applies and all(r["operator_reason"] == "CHG-42" and r["operator_user"] == _me() for r in applies)
    assert all(r["peer_pid"] == os.getpid() for r in applies)
    hotfix.rollback()
