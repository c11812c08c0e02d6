"""``hotfix rollout``: canary first, then the rest, undo on the first failure.

The real thing runs gunicorn with 4 workers from ``examples/gunicorn``;
the preflight rules are checked against an endpoint in this process.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hotfix.admin
from hotfix._cli import main
from tests.helpers import EXAMPLES, assert_same, snapshot

EXAMPLE = EXAMPLES / "gunicorn"
V1 = """
    def f():
        return 1
"""
SAFE = V1.replace("return 1", "return 2")
RISKY = "def f():\n    try:\n        return 2\n    except KeyError:\n        return 0\n"
BLOCKED = "def f(:\n"


def rollout(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["rollout", *argv, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["exit_code"] == code
    return code, doc


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60)
    return int(done.stdout)


# --------------------------------------------------------------------------- preflight rules, in process


def test_rollout_in_one_process(modules, capsys, short_dir):
    d = short_dir()
    mod = modules.create(V1)
    with hotfix.admin.serve_socket_dir(d, allowed_roots=[modules.dir]):
        code, doc = rollout(capsys, "--socket-dir", d, "dry-run", mod.__name__)
        assert (code, doc["processes"][0]["outcome"]) == (0, "unchanged")
        modules.write(mod, SAFE)
        code, out = main(["rollout", "--socket-dir", d, "apply", mod.__name__, "--probation", "0"]), capsys.readouterr().out
        assert code == 0
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(str(os.getpid())))
        assert line.split()[1:2] == ["canary"] and " applied " in line
        assert "APPLIED" in out
        assert mod.f() == 2
        code, doc = rollout(capsys, "--socket-dir", d, "apply", mod.__name__)
        assert (code, doc["outcome"]) == (0, "unchanged")


def test_preflight_refusals_change_nothing(modules, capsys, short_dir):
    d = short_dir()
    mod = modules.create(V1)
    name = mod.__name__
    assert rollout(capsys, "--socket-dir", d, "apply", name)[0] == 4  # no endpoints at all
    assert rollout(capsys, "--socket-dir", d + "-missing", "apply", name)[0] == 2
    with hotfix.admin.serve_socket_dir(d, allowed_roots=[modules.dir]):
        before = snapshot(mod)
        modules.write(mod, RISKY)
        code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--probation", "0")
        assert (code, doc["outcome"]) == (1, "aborted") and "risky" in doc["message"]
        modules.write(mod, BLOCKED)
        assert rollout(capsys, "--socket-dir", d, "apply", name)[1]["outcome"] == "aborted"
        assert rollout(capsys, "--socket-dir", d, "apply", name)[0] == 3
        modules.write(mod, SAFE)
        code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--expect-sha256", "0" * 64)
        assert (code, doc["outcome"]) == (3, "aborted")
        code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--canary", "1")
        assert code == 2
        code, doc = rollout(capsys, "--socket-dir", d, "apply", "not_loaded_here")
        assert (code, doc["outcome"], doc["processes"][0]["outcome"]) == (0, "not-loaded", "not-loaded")
        code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--token", "wrong-token-" + "w" * 20)
        assert (code, doc["processes"][0]["http_status"]) == (4, 401)
        # a live process whose endpoint does not answer (pid 1 exists): abort before touching anyone
        lonely = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lonely.bind(os.path.join(d, "1.sock"))
        try:
            code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--probation", "0")
        finally:
            lonely.close()
            os.unlink(os.path.join(d, "1.sock"))
        assert (code, doc["outcome"]) == (4, "unreachable")
        assert [p["outcome"] for p in doc["processes"]] == ["unreachable", "untouched"]
        assert_same(before, snapshot(mod))
        # the socket of a process that is gone is skipped
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(os.path.join(d, f"{dead_pid()}.sock"))
        stale.close()
        code, doc = rollout(capsys, "--socket-dir", d, "apply", name, "--probation", "0")
        assert (code, doc["outcome"]) == (0, "applied"), doc
        assert sorted(p["outcome"] for p in doc["processes"]) == ["applied", "gone"]
        assert mod.f() == 2


# --------------------------------------------------------------------------- gunicorn, 4 workers

TEST_CONF = """
import os
exec(compile(open({conf!r}).read(), {conf!r}, "exec"))
control_socket_disable = True  # gunicorn >= 25 would share ~/.gunicorn/gunicorn.ctl between tests


def fault_injection():
    # test only: fail the check in the worker that has a marker file
    return not os.path.exists(os.path.join(HOTFIX_SOCKET_DIR, f"fail-{{os.getpid()}}"))


HOTFIX_CHECKS["greeting"].append(fault_injection)
"""


def http_get(path: str) -> dict:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    conn.sock = sock
    try:
        conn.request("GET", "/")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


@pytest.fixture
def gunicorn_fleet(tmp_path, short_dir):
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        pytest.skip("gunicorn is not installed")
    app_dir = tmp_path / "app"
    shutil.copytree(EXAMPLE, app_dir)
    sock_dir = short_dir("hfgu-")
    http_dir = short_dir("hfgh-")
    conf = tmp_path / "test.conf.py"
    conf.write_text(TEST_CONF.format(conf=str(app_dir / "gunicorn.conf.py")))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_")},
           "HOTFIX_SOCKET_DIR": sock_dir, "GUNICORN_BIND": f"unix:{http_dir}/g.sock", "GUNICORN_WORKERS": "4"}
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf), "--chdir", str(app_dir),
                             "app:application"], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in os.listdir(sock_dir) if n.endswith(".sock")]) < 4:  # readiness: 4 sockets listening
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {(tmp_path / 'gunicorn.log').read_text()[-3000:]}")
            time.sleep(0.05)
        yield app_dir, sock_dir, f"{http_dir}/g.sock"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def fleet_verdicts(capsys, sock_dir: str, module: str) -> list[str]:
    code, doc = rollout(capsys, "--socket-dir", sock_dir, "dry-run", module)
    return [p["verdict"] for p in doc["processes"]]


def test_gunicorn_rollout_canary_then_rest_and_undo_on_failure(gunicorn_fleet, capsys):
    app_dir, sock_dir, http_sock = gunicorn_fleet
    assert fleet_verdicts(capsys, sock_dir, "greeting") == ["unchanged"] * 4
    assert http_get(http_sock)["greeting"] == "Hello world"

    # a good fix: canary first, then the three others
    (app_dir / "greeting.py").write_text('def greet(name):\n    return f"Hi {name}"\n')
    assert fleet_verdicts(capsys, sock_dir, "greeting") == ["safe"] * 4
    code, doc = rollout(capsys, "--socket-dir", sock_dir, "apply", "greeting", "--probation", "0.1")
    assert (code, doc["outcome"], doc["consistent"]) == (0, "applied", True), doc
    pids = [p["pid"] for p in doc["processes"]]
    assert pids == sorted(pids) and len(pids) == 4
    assert [p["role"] for p in doc["processes"]] == ["canary", "process", "process", "process"]
    assert [p["outcome"] for p in doc["processes"]] == ["applied"] * 4
    assert doc["canary"] == pids[0]
    assert {http_get(http_sock)["greeting"] for _ in range(8)} == {"Hi world"}
    assert fleet_verdicts(capsys, sock_dir, "greeting") == ["unchanged"] * 4

    # a version that fails its check in the second worker: the canary is rolled back too
    (app_dir / "greeting.py").write_text('def greet(name):\n    return f"Hey {name}"\n')
    Path(sock_dir, f"fail-{pids[1]}").touch()
    code, doc = rollout(capsys, "--socket-dir", sock_dir, "apply", "greeting", "--probation", "0.1")
    assert (code, doc["outcome"], doc["consistent"]) == (1, "rolled-back", True), doc
    assert [p["outcome"] for p in doc["processes"]] == ["rolled-back", "rolled-back", "not-attempted", "not-attempted"]
    assert "rolled back by the rollout" in doc["processes"][0]["message"]
    assert "check" in doc["processes"][1]["message"]
    assert fleet_verdicts(capsys, sock_dir, "greeting") == ["safe"] * 4  # every worker still runs "Hi"
    assert {http_get(http_sock)["greeting"] for _ in range(8)} == {"Hi world"}
    canary = hotfix.admin.Client(socket_path=os.path.join(sock_dir, f"{pids[0]}.sock"),
                                 token=Path(sock_dir, "token").read_text().strip())
    last = canary.history().body["entries"][-1]
    assert (last["kind"], last["reason"]) == ("rollback", "requested")

    # the human output: one line per process and a summary
    code = main(["rollout", "--socket-dir", sock_dir, "apply", "greeting", "--probation", "0.1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and len(lines) == 5 and "canary" in lines[0] and "ROLLED-BACK" in lines[-1]
