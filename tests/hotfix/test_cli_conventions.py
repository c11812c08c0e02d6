"""CLI conventions: one --json envelope, one "hotfix:" prefix, --version, shell completion, `hotfix ps`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hotfix
import hotfix.admin
from hotfix._cli import main
from tests.helpers import REPO

TOKEN = "conv-token-" + "c" * 24
V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def endpoint(modules, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # a private registry for `hotfix ps`
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    yield server
    server.close()


ENVELOPE_CASES = [
    ("usage", ["--json"]),
    ("usage", ["--json", "apply"]),
    ("usage", ["--json", "frobnicate"]),
    ("unreachable", ["--json", "--url", "http://127.0.0.1:9", "--token", TOKEN, "status"]),
    ("diff", ["--json", "diff", "OLD", "NEW"]),
    ("status", ["--json", "--url", "URL", "--token", TOKEN, "status"]),
    ("history", ["--json", "--url", "URL", "--token", TOKEN, "history"]),
    ("unauthorised", ["--json", "--url", "URL", "--token", "wrong-" + TOKEN, "status"]),
    ("ps", ["--json", "ps"]),
]


@pytest.mark.parametrize(("case", "argv"), ENVELOPE_CASES, ids=[c for c, _ in ENVELOPE_CASES])
def test_every_json_document_has_the_same_envelope(endpoint, capsys, tmp_path, case, argv):
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    old.write_text(V1)
    new.write_text(V2)
    argv = [str(old) if a == "OLD" else str(new) if a == "NEW" else endpoint.url if a == "URL" else a for a in argv]
    code, out, _ = run(capsys, *argv)
    doc = json.loads(out)
    assert {"schema_version", "command", "ok", "exit_code"} <= set(doc), doc
    assert doc["ok"] is (code == 0) and doc["exit_code"] == code
    if not doc["ok"] and case != "unauthorised":
        assert set(doc["error"]) == {"kind", "message"}


@pytest.mark.parametrize("argv", [["apply"], ["frobnicate"], ["--probation"], ["status", "--http-timeout", "x"],
                                  ["rollout", "--socket-dir", "/nonexistent", "apply", "m"]])
def test_errors_say_hotfix_once(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("hotfix:") == 1 and "hotfix: hotfix" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("hotfix:")]
    assert len(lines) == 1 and lines[0] != "hotfix:"


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip().startswith(f"hotfix {hotfix.__version__}")


def test_shell_completion_with_argcomplete(tmp_path):
    """argcomplete's protocol: _ARGCOMPLETE set, the candidates written to fd 8."""
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": "hotfix ro",
           "COMP_POINT": str(len("hotfix ro")), "_ARGCOMPLETE_SUPPRESS_SPACE": "0"}
    script = f'"$0" -c "import sys; from hotfix._cli import main; sys.exit(main())" 8>"{out}" 9>/dev/null'
    proc = subprocess.run(["bash", "-c", script, sys.executable], env=env, cwd=REPO, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    words = out.read_text().split()
    assert "rollback" in words and "rollout" in words and "status" not in words


def test_ps_lists_local_endpoints_with_patches(endpoint, modules, capsys, short_dir, monkeypatch):
    mod = modules.create(V1)
    modules.write(mod, V2)
    patch = hotfix.apply(mod, probation=0)
    sockdir = short_dir()
    sock_server = hotfix.admin.serve_socket_dir(sockdir, allowed_roots=[modules.dir])
    monkeypatch.setenv("HOTFIX_TOKEN", TOKEN)  # the TCP server's; the socket directory has its own token file
    try:
        code, out, _ = run(capsys, "ps", "--json", "--socket-dir", sockdir)
        doc = json.loads(out)
        assert code == 0 and doc["ok"] is True
        mine = [p for p in doc["processes"] if p["pid"] == os.getpid()]
        endpoints = {p["endpoint"] for p in mine}
        assert endpoint.url in endpoints and f"unix:{sock_server.socket_path}" in endpoints
        assert len(mine) == 2  # registered and found in the socket directory: listed once
        for p in mine:
            assert "pytest" in p["command"] or "python" in p["command"]
            assert patch.id in [x["id"] for x in p["patches_in_effect"]]
            assert [x for x in p["patches_in_effect"] if x["id"] == patch.id][0]["modules"] == [mod.__name__]
        code, out, _ = run(capsys, "ps", "--socket-dir", sockdir)
        assert str(os.getpid()) in out and patch.id in out
        # without a readable token: the count from health, not the names
        monkeypatch.setenv("HOTFIX_TOKEN", "not-the-token-" + "x" * 20)
        code, out, _ = run(capsys, "ps", "--json")
        [tcp] = [p for p in json.loads(out)["processes"] if p["endpoint"] == endpoint.url]
        assert tcp["patches_in_effect"] is None and tcp["patch_count"] >= 1
    finally:
        sock_server.close()
        hotfix.rollback()
    endpoint.close()
    code, out, _ = run(capsys, "ps", "--json")
    assert not [p for p in json.loads(out)["processes"] if p["endpoint"] == endpoint.url]  # unregistered on close
