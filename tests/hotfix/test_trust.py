"""Trust checks on socket directories, token files and the runtime directory (issue 12, defect 10).

Files "of another user" are made with chown, which needs root; those cases
are skipped otherwise. The rest (modes, symlinks, a squatting file) runs
as any user.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile

import pytest

import hotfix.admin
from hotfix.admin import _auth

OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to create files of another user")
DEAD_PID = 999_999_999  # above any pid_max


@pytest.fixture
def runtime(monkeypatch, short_dir):
    """A private temporary directory and home, no XDG_RUNTIME_DIR: the default token location."""
    tmp = short_dir("hf-trust-")
    home = os.path.join(tmp, "home")
    tmpdir = os.path.join(tmp, "tmp")
    os.mkdir(home)
    os.mkdir(tmpdir)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setattr(tempfile, "tempdir", tmpdir)
    return tmpdir, home


# --------------------------------------------------------------------------- socket directory


def test_a_socket_directory_others_can_write_is_refused(short_dir):
    d = short_dir()
    os.chmod(d, 0o777)
    with pytest.raises(PermissionError) as info:
        hotfix.admin.serve_socket_dir(d)
    message = str(info.value)
    assert d in message and "chmod 700" in message
    assert os.listdir(d) == []  # refused before anything was written there
    os.chmod(d, 0o770)  # group-writable is no better
    with pytest.raises(PermissionError, match="writable by group or others"):
        hotfix.admin.serve_socket_dir(d)


@as_root
def test_a_socket_directory_of_another_user_is_refused(short_dir):
    d = short_dir()
    os.chown(d, OTHER_UID, OTHER_UID)
    with pytest.raises(PermissionError) as info:
        hotfix.admin.serve_socket_dir(d)
    assert d in str(info.value) and f"uid {OTHER_UID}" in str(info.value)


@as_root
def test_a_planted_token_file_of_another_user_is_not_adopted(short_dir):
    d = short_dir()
    token = os.path.join(d, "token")
    with open(token, "w") as fh:
        fh.write("planted-by-someone-else-" + "p" * 20 + "\n")
    os.chmod(token, 0o600)
    os.chown(token, OTHER_UID, OTHER_UID)
    with pytest.raises(PermissionError) as info:
        hotfix.admin.serve_socket_dir(d)
    assert token in str(info.value) and "remove it" in str(info.value)
    assert sorted(os.listdir(d)) == ["token"]  # no socket served with the planted token


def test_a_token_file_others_can_read_is_not_adopted(short_dir):
    d = short_dir()
    token = os.path.join(d, "token")
    with open(token, "w") as fh:
        fh.write("readable-by-everyone-" + "r" * 20 + "\n")
    os.chmod(token, 0o644)
    with pytest.raises(PermissionError) as info:
        hotfix.admin.serve_socket_dir(d)
    assert token in str(info.value) and "644" in str(info.value)


def test_a_token_symlink_is_not_adopted(short_dir, tmp_path):
    d = short_dir()
    target = tmp_path / "elsewhere"
    target.write_text("symlinked-token-" + "s" * 20 + "\n")
    os.chmod(target, 0o600)
    os.symlink(target, os.path.join(d, "token"))
    with pytest.raises(PermissionError, match="not a regular file"):
        hotfix.admin.serve_socket_dir(d)


def test_a_private_shared_token_is_adopted(short_dir):
    d = short_dir()
    token = os.path.join(d, "token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
        fh.write("written-by-another-worker-" + "w" * 20 + "\n")
    with hotfix.admin.serve_socket_dir(d) as server:
        assert server.token == "written-by-another-worker-" + "w" * 20


def test_a_mounted_app_under_hotfix_run_shares_the_services_token(short_dir, monkeypatch):
    """Every worker's mounted app and socket endpoint answer the one token in the socket directory."""
    d = short_dir()
    monkeypatch.delenv("HOTFIX_TOKEN", raising=False)
    monkeypatch.setenv("HOTFIX_SOCKET_DIR", d)
    first = hotfix.admin.wsgi_app()
    second = hotfix.admin.asgi_app()
    with hotfix.admin.serve_socket_dir(d) as server:
        assert first.token == second.token == server.token
    with open(os.path.join(d, "token")) as fh:
        assert fh.read().strip() == first.token
    assert [n for n in os.listdir(d) if n.endswith(".token")] == []  # no per-process file was written


def test_a_mounted_app_refuses_an_open_socket_directory(short_dir, monkeypatch):
    d = short_dir()
    os.chmod(d, 0o777)
    monkeypatch.delenv("HOTFIX_TOKEN", raising=False)
    monkeypatch.setenv("HOTFIX_SOCKET_DIR", d)
    with pytest.raises(PermissionError, match="writable by group or others"):
        hotfix.admin.wsgi_app()
    assert os.listdir(d) == []


# --------------------------------------------------------------------------- stale token files


def test_token_files_of_dead_processes_are_removed_like_their_sockets(short_dir, runtime, monkeypatch):
    tmpdir, _ = runtime
    private = os.path.join(tmpdir, f"hotfix-{os.getuid()}")
    os.mkdir(private, 0o700)
    dead = os.path.join(private, f"hotfix-{DEAD_PID}.token")
    alive = os.path.join(private, f"hotfix-{os.getppid()}.token")
    for path in (dead, alive):
        with open(path, "w") as fh:
            fh.write("x" * 30)
    server = hotfix.admin.serve()  # generates a token file in the runtime directory
    try:
        assert server.token_file == os.path.join(private, f"hotfix-{os.getpid()}.token")
        assert not os.path.exists(dead)
        assert os.path.exists(alive)
    finally:
        server.close()
    # In a socket directory: <pid>.sock and <pid>.sock.token of a dead process.
    d = short_dir()
    for name in (f"{DEAD_PID}.sock.token", f"{os.getppid()}.sock.token"):
        with open(os.path.join(d, name), "w") as fh:
            fh.write("y" * 30)
    with hotfix.admin.serve_socket_dir(d):
        names = os.listdir(d)
        assert f"{DEAD_PID}.sock.token" not in names
        assert f"{os.getppid()}.sock.token" in names


# --------------------------------------------------------------------------- <tempdir>/hotfix-<uid>


def test_a_squatted_runtime_directory_is_refused_and_a_private_fallback_works(runtime, caplog):
    """Another user creates <tempdir>/hotfix-<uid> first (here: a file by that name, which any user
    can do): serve() used to fail at start-up."""
    tmpdir, home = runtime
    squatted = os.path.join(tmpdir, f"hotfix-{os.getuid()}")
    with open(squatted, "w") as fh:
        fh.write("")
    caplog.set_level(logging.WARNING, logger="hotfix.admin")
    with hotfix.admin.serve() as server:
        fallback = os.path.join(home, ".cache", "hotfix", "run")
        assert server.token_file == os.path.join(fallback, f"hotfix-{os.getpid()}.token")
        assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700
        assert open(server.token_file).read().strip() == server.token
        assert hotfix.admin.Client(server.url, token=server.token).status().status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(squatted in w and "remove" in w for w in warnings), warnings
    assert _auth.runtime_dir(create=False) == fallback  # readers (hotfix ps) make the same choice


@as_root
def test_a_runtime_directory_of_another_user_is_refused_with_a_fallback(runtime, caplog):
    tmpdir, home = runtime
    squatted = os.path.join(tmpdir, f"hotfix-{os.getuid()}")
    os.mkdir(squatted, 0o777)
    os.chown(squatted, OTHER_UID, OTHER_UID)
    caplog.set_level(logging.WARNING, logger="hotfix.admin")
    with hotfix.admin.serve() as server:
        assert not server.token_file.startswith(squatted)
        assert os.listdir(squatted) == []
    assert any(squatted in r.getMessage() and f"uid {OTHER_UID}" in r.getMessage() for r in caplog.records)
