"""The ``hotfix`` command against an endpoint in this process, and the offline ``diff``."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import hotfix.admin
from hotfix._cli import main
from tests.helpers import assert_same, snapshot

TOKEN = "cli-token-" + "c" * 24
V1 = """
    def f():
        return 1

    def g(x):
        return x
"""
SAFE = V1.replace("return 1", "return 2")
RISKY = V1.replace("def g(x):\n        return x", "def g(x):\n        try:\n            return x + 1\n        except KeyError:\n            return 0")
BLOCKED = "def f(:\n    pass\n"


@pytest.fixture
def endpoint(modules, monkeypatch):
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    monkeypatch.setenv("HOTFIX_URL", server.url)
    monkeypatch.setenv("HOTFIX_TOKEN", TOKEN)
    yield server
    server.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    doc = json.loads(out)  # exactly one document: json.loads refuses trailing data
    assert doc["schema_version"] == 1
    assert doc["exit_code"] == code
    return code, doc


def test_exit_codes_follow_the_outcome(endpoint, modules, capsys):
    mod = modules.create(V1)
    name = mod.__name__
    code, out, _ = run(capsys, "status")
    assert code == 0 and "workers:" in out and "stale modules" in out
    assert run(capsys, "dry-run", name)[0] == 0  # unchanged

    modules.write(mod, SAFE)
    code, out, _ = run(capsys, "dry-run", name)
    assert code == 0 and f"{name}: SAFE" in out and "--expect-sha256" in out
    code, out, _ = run(capsys, "status")
    assert name in out
    code, out, _ = run(capsys, "apply", name, "--probation", "0")
    assert code == 0 and "APPLIED" in out
    assert mod.f() == 2

    modules.write(mod, RISKY.replace("return 1", "return 2"))
    before = snapshot(mod)
    assert run(capsys, "dry-run", name)[0] == 1
    code, out, _ = run(capsys, "apply", name, "--probation", "0")
    assert code == 1 and "REJECTED (risky)" in out
    assert_same(before, snapshot(mod))
    assert run(capsys, "apply", name, "--probation", "0", "--allow-risky")[0] == 0

    modules.write(mod, BLOCKED)
    before = snapshot(mod)
    assert run(capsys, "dry-run", name)[0] == 3
    code, out, _ = run(capsys, "apply", name, "--probation", "0")
    assert code == 3 and "REJECTED (blocked)" in out and "syntax-error" in out
    assert_same(before, snapshot(mod))

    modules.write(mod, RISKY.replace("return 1", "return 3"))
    endpoint.router.checks[name] = (lambda: mod.f() == 2,)  # as if registered with serve(checks=...)
    before = snapshot(mod)
    code, out, _ = run(capsys, "apply", name, "--probation", "0")
    assert code == 1 and "ROLLED BACK (check-failed)" in out
    assert_same(before, snapshot(mod))

    code, out, _ = run(capsys, "history")
    assert code == 0 and "rollback" in out and "check-failed" in out
    code, out, _ = run(capsys, "rollback")
    assert code == 0 and "rolled back" in out
    assert run(capsys, "rollback", "hf-0-0-none")[0] == 3
    assert run(capsys, "dry-run", "no_such_module_anywhere")[0] == 3
    code, _, err = run(capsys, "apply", "json")
    assert code == 3 and "not under the allowed prefixes" in err


def test_json_output_is_one_document_on_stdout(endpoint, modules, capsys):
    mod = modules.create(V1)
    modules.write(mod, SAFE)
    code, doc = run_json(capsys, "dry-run", mod.__name__)
    assert (code, doc["command"], doc["result"]["outcome"]) == (0, "dry-run", "safe")
    sha = doc["result"]["report"]["source"]["disk"]["sha256"]
    # --json before the command works as well
    code, out, err = run(capsys, "--json", "apply", mod.__name__, "--expect-sha256", sha, "--probation", "0")
    doc = json.loads(out)
    assert (code, doc["result"]["outcome"], doc["http_status"]) == (0, "applied", 200)
    assert doc["result"]["patch"]["sha256"] == [sha]
    patch_id = doc["result"]["patch"]["id"]
    code, doc = run_json(capsys, "history")
    assert code == 0 and doc["result"]["entries"]
    code, doc = run_json(capsys, "status")
    assert code == 0 and doc["result"]["pid"] == os.getpid()
    code, doc = run_json(capsys, "rollback")
    assert code == 0 and doc["result"]["rollback"]["patch_id"] == patch_id
    code, doc = run_json(capsys, "apply", "not_loaded_mod")
    assert code == 3 and doc["http_status"] == 404 and doc["ok"] is False


def test_unreachable_or_unauthorised_is_4(endpoint, capsys, monkeypatch):
    monkeypatch.setenv("HOTFIX_TOKEN", "wrong-" + TOKEN)
    code, doc = run_json(capsys, "status")
    assert (code, doc["http_status"]) == (4, 401)
    monkeypatch.setenv("HOTFIX_TOKEN", TOKEN)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, doc = run_json(capsys, "--url", f"http://127.0.0.1:{port}", "status")
    assert code == 4 and doc["error"]["kind"] == "unreachable"
    code, doc = run_json(capsys, "--socket", "/nonexistent/hotfix.sock", "--token", TOKEN, "status")
    assert code == 4 and doc["error"]["kind"] == "unreachable"

    class NotHotfix(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotHotfix)
    t = threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        code, doc = run_json(capsys, "--url", f"http://127.0.0.1:{other.server_address[1]}", "status")
        assert code == 4 and "hotfix endpoint" in doc["error"]["message"]
    finally:
        other.shutdown()
        other.server_close()
        t.join(10)


def test_usage_errors_are_2(endpoint, capsys, monkeypatch, tmp_path):
    assert run(capsys, "--json")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "apply")[0] == 2
    assert run(capsys, "apply", "m", "--probation", "-1")[0] == 2
    assert run(capsys, "apply", "m", "--probation", "soon")[0] == 2
    assert run(capsys, "--url", "ftp://x", "status")[0] == 2
    assert run(capsys, "--url", endpoint.url, "--socket", "/x.sock", "status")[0] == 2
    assert run(capsys, "status", "--token-file", str(tmp_path / "missing"))[0] == 2
    code, doc = run_json(capsys, "apply")
    assert code == 2 and doc["error"]["kind"] == "usage"
    monkeypatch.delenv("HOTFIX_URL")
    code, out, err = run(capsys, "status")
    assert code == 2 and "no endpoint" in err and out == ""
    monkeypatch.setenv("HOTFIX_URL", endpoint.url)
    monkeypatch.delenv("HOTFIX_TOKEN")
    code, _, err = run(capsys, "status")
    assert code == 2 and "no token" in err
    assert run(capsys, "--help")[0] == 0


def test_token_and_address_sources(endpoint, modules, capsys, monkeypatch, tmp_path, short_dir):
    monkeypatch.delenv("HOTFIX_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert run(capsys, "status", "--token-file", str(token_file))[0] == 0
    monkeypatch.setenv("HOTFIX_TOKEN_FILE", str(token_file))
    assert run(capsys, "status")[0] == 0
    assert run(capsys, "status", "--token", "wrong-" + TOKEN)[0] == 4  # the flag wins over the environment
    monkeypatch.delenv("HOTFIX_TOKEN_FILE")
    monkeypatch.delenv("HOTFIX_URL")
    d = short_dir()
    with hotfix.admin.serve_socket_dir(d, allowed_roots=[modules.dir]) as server:
        # the token file next to the socket is found by itself
        assert run(capsys, "--socket", server.socket_path, "status")[0] == 0
        monkeypatch.setenv("HOTFIX_SOCKET", server.socket_path)
        assert run(capsys, "status")[0] == 0
        monkeypatch.delenv("HOTFIX_SOCKET")
        assert run(capsys, "--url", server.url, f"--token={server.token}", "status")[0] == 0


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_diff_offline(tmp_path, capsys):
    old = _write(tmp_path, "old.py", V1)
    cases = {"same.py": (V1, 0, "unchanged"), "safe.py": (SAFE, 0, "safe"),
             "risky.py": (RISKY, 1, "risky"), "blocked.py": (BLOCKED, 3, "blocked")}
    for name, (text, expected, verdict) in cases.items():
        new = _write(tmp_path, name, text)
        code, out, _ = run(capsys, "diff", old, new)
        assert code == expected and verdict.upper() in out, name
        code, doc = run_json(capsys, "diff", old, new, "--module", "billing")
        assert (code, doc["verdict"], doc["report"]["verdict"], doc["report"]["module"]) == (expected, verdict, verdict, "billing")
    assert run(capsys, "diff", old, str(tmp_path / "missing.py"))[0] == 2


def test_python_m_hotfix(tmp_path):
    old = _write(tmp_path, "old.py", V1)
    new = _write(tmp_path, "new.py", RISKY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_")}
    done = subprocess.run([sys.executable, "-m", "hotfix", "diff", old, new, "--json"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["verdict"] == "risky"
    done = subprocess.run([sys.executable, "-m", "hotfix", "status"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == "" and "no endpoint" in done.stderr
