"""A mounted admin app under ``uvicorn --workers 2`` (no launcher) refuses to patch one worker of two."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import urllib.parse

import pytest

from hotfix._cli import main as cli_main
from tests.helpers import EXAMPLES

from .service_helpers import Service, answers, copy_example, service_env, unix_get

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

TOKEN = "s" * 40


def post(path: str, url: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("localhost", timeout=30)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    conn.sock = sock
    try:
        conn.request("POST", url, json.dumps(body), {"Authorization": f"Bearer {TOKEN}",
                                                     "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def greet(http_sock: str) -> str:
    return unix_get(http_sock, "/")[1]["greeting"]


def test_mounted_app_in_uvicorn_workers_refuses_one_process_patch(tmp_path, short_dir, capsys):
    app = copy_example(EXAMPLES / "fastapi_app", tmp_path / "app")
    http_sock = os.path.join(short_dir("hfmh-"), "m.sock")
    env = service_env(HOTFIX_TOKEN=TOKEN)
    service = Service([os.path.join(os.path.dirname(sys.executable), "uvicorn"), "--uds", http_sock,
                       "--workers", "2", "--log-level", "warning", "app:app"], app, tmp_path / "uvicorn.log",
                      "", env=env)
    try:
        service.wait_for("HTTP answers", answers(http_sock))
        (app / "greetings.py").write_text((app / "greetings.py").read_text().replace("Hello", "Howdy"))
        status, body = post(http_sock, "/ops/hotfix/v1/apply", {"module": "greetings", "probation": 0})
        assert (status, body["reason"]) == (409, "siblings"), body
        assert len(body["siblings"]) == 1 and body["pid"] not in body["siblings"]
        assert "this process only" in body["message"] or "patch this process only" in body["message"]
        # the CLI a user runs against the mount: exit 3 (refused, nothing changed), saying why
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        url = "http+unix://" + urllib.parse.quote(http_sock, safe="") + "/ops"
        capsys.readouterr()
        code = cli_main(["--url", url, "--token-file", str(token_file), "apply", "greetings", "--probation", "0"])
        said = "".join(capsys.readouterr())
        assert code == 3, said
        assert "REJECTED (siblings)" in said and "other process(es) of this service" in said, said
        assert {greet(http_sock) for _ in range(10)} == {"Hello world"}  # no worker was patched
    finally:
        service.close()
