"""``hotfix run``: options and their environment twins, the kill switch, sitecustomize chaining,
install scope, and endpoints in forked children. Each case runs a real interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hotfix._run import CheckSpec, ConfigError, RunConfig
from hotfix._run._cli import build_parser, config_from_args

from .service_helpers import hotfix_run, rollout, service_env

SCRIPT = """
import json, os, sys
import hotfix._baseline as b
import appmod
out = {"hotfix": "hotfix" in sys.modules, "app_baseline": b.get_baseline("appmod") is not None}
if "django" in sys.argv:
    import django.db.models
    out["django_baselines"] = sorted(n for n in b.baselines() if n.startswith("django"))
print(json.dumps(out))
"""


def run(tmp_path, *argv: str, env: dict | None = None, script: str = SCRIPT, args: tuple = ()) -> tuple[int, str, str]:
    (tmp_path / "appmod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "main.py").write_text(textwrap.dedent(script))
    done = subprocess.run([*argv, sys.executable, "main.py", *args], cwd=tmp_path, env=env or service_env(),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_config_round_trips_through_the_environment():
    config = RunConfig(socket_dir="/run/x", prefixes=("app", "lib.sub"), roots=("/srv/a", "/srv/b"),
                       audit_log="/var/log/a.jsonl", probation=0.5, timeout=2.0,
                       checks=(CheckSpec.parse("app.checks:smoke"), CheckSpec.parse("greeting=app.checks:greet_ok")),
                       log_level="INFO", cover_executors=True, integrations=False)
    assert RunConfig.from_env(config.to_env()) == config
    assert RunConfig.from_env({}) == RunConfig()
    assert RunConfig.from_env({"HOTFIX_DISABLED": "1"}).disabled
    with pytest.raises(ConfigError):
        RunConfig.from_env({"HOTFIX_PROBATION": "soon"})
    for bad in ("app.checks", "app checks:smoke", "=app:f", "app:"):
        with pytest.raises(ConfigError):
            CheckSpec.parse(bad)
    args = build_parser().parse_args(["--prefix", "app,lib", "--probation", "1", "--", "gunicorn", "-w", "2"])
    config = config_from_args(args, {"HOTFIX_TIMEOUT": "3", "HOTFIX_PREFIXES": "ignored"})
    assert (config.prefixes, config.probation, config.timeout) == (("app", "lib"), 1.0, 3.0)
    assert args.command[-3:] == ["gunicorn", "-w", "2"]


def test_run_bootstraps_scope_and_endpoint(tmp_path, short_dir):
    sockets = short_dir("hfrl-")
    code, out, err = run(tmp_path, *hotfix_run(sockets), args=("django",))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["hotfix"] and doc["app_baseline"], doc
    assert doc["django_baselines"] == []  # third-party code imports through the normal path
    assert os.path.exists(os.path.join(sockets, "token")) and f"endpoints in {sockets}" in err

    code, out, err = run(tmp_path, *hotfix_run(sockets, "--prefix", "other"))
    assert code == 0 and json.loads(out)["app_baseline"] is False, err  # outside the given prefixes


def test_kill_switch_and_chained_sitecustomize(tmp_path, short_dir):
    sockets = short_dir("hfrk-")
    theirs = tmp_path / "site"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIR_SITECUSTOMIZE_RAN'] = '1'\n")
    script = "import json, os, sys\nprint(json.dumps([os.environ.get('THEIR_SITECUSTOMIZE_RAN'), 'hotfix' in sys.modules]))\n"
    env = service_env(PYTHONPATH=str(theirs))
    code, out, err = run(tmp_path, *hotfix_run(sockets), env=env, script=script)
    assert (code, json.loads(out)) == (0, ["1", True]), err
    code, out, err = run(tmp_path, *hotfix_run(sockets), env={**env, "HOTFIX_DISABLED": "1"}, script=script)
    assert (code, json.loads(out)) == (0, ["1", False]), err
    assert "running the command without hotfix" in err
    code, _, err = run(tmp_path, sys.executable, "-m", "hotfix", "run", "--probation", "-1", "--")
    assert code == 2 and "--probation" in err


FORKING = """
import json, os, sys, time
import appmod
sockets = os.environ["HOTFIX_SOCKET_DIR"]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(sockets, f"{os.getpid()}.sock")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.write(w, b"x")
    sys.stdin.read()  # serve until the test closes stdin
    os._exit(0)
os.close(w)
os.read(r, 1)
print(json.dumps({"parent": os.getpid(), "child": pid}), flush=True)
sys.stdin.read()
os.waitpid(pid, 0)
"""


def test_a_forked_child_serves_its_own_socket(tmp_path, short_dir):
    sockets = short_dir("hfrf-")
    (tmp_path / "appmod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "main.py").write_text(FORKING)
    proc = subprocess.Popen([*hotfix_run(sockets), sys.executable, "main.py"], cwd=tmp_path, env=service_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = json.loads(proc.stdout.readline())
        code, doc = rollout("--socket-dir", sockets, "status", "appmod")
        by_pid = {p["pid"]: p for p in doc["processes"]}
        assert set(by_pid) == {pids["parent"], pids["child"]}, doc
        assert by_pid[pids["child"]]["ppid"] == pids["parent"]
        assert by_pid[pids["parent"]]["fork_source"] and by_pid[pids["parent"]]["role"] == "fork-source"
        assert (code, doc["converged"]) == (0, True)
        (tmp_path / "appmod.py").write_text("def f():\n    return 2\n")
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod", "--probation", "0")
        assert (code, doc["outcome"], doc["canary"]) == (0, "applied", pids["child"]), doc
    finally:
        proc.stdin.close()
        proc.wait(60)
        print(proc.stderr.read())
