"""A mounted admin app in one process of many never reports the service as patched."""

from __future__ import annotations

import io
import json
import os
import socket

from hotfix._outcomes import exit_code_for_reply
from hotfix.admin import wsgi_app

TOKEN = "t" * 40


def call(app, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body or {}).encode()
    environ = {"REQUEST_METHOD": "POST" if body is not None else "GET", "PATH_INFO": path,
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data), "HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "REMOTE_ADDR": "127.0.0.1"}
    status: list[str] = []
    out = b"".join(app(environ, lambda s, h: status.append(s)))
    return int(status[0].split()[0]), json.loads(out)


def test_a_sibling_in_the_socket_dir_refuses_apply_unless_allowed(modules, short_dir):
    mod = modules.create("def f():\n    return 1\n")
    d = short_dir()
    sibling = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sibling.bind(os.path.join(d, f"{os.getppid()}.sock"))  # a live process of the same service
    try:
        app = wsgi_app(TOKEN, allowed_roots=[modules.dir], socket_dir=d)
        modules.write(mod, "def f():\n    return 2\n")
        status, body = call(app, "/hotfix/v1/apply", {"module": mod.__name__, "probation": 0})
        assert (status, body["error"], body["reason"], body["outcome"]) == (409, "rejected", "siblings", "rejected")
        assert exit_code_for_reply("apply", status, body) == 3  # rejected, nothing changed (not 4: unreachable)
        assert body["siblings"] == [os.getppid()] and body["pid"] == os.getpid()
        assert f"pid {os.getpid()}" in body["message"] and "hotfix rollout --socket-dir" in body["message"]
        assert mod.f() == 1  # nothing changed
        status, body = call(app, "/hotfix/v1/dry-run", {"module": mod.__name__})
        assert status == 200  # reading is fine
        # unauthorised: the router's 401, nothing about the process tree
        app_wrong = wsgi_app("w" * 40, allowed_roots=[modules.dir], socket_dir=d)
        status, body = call(app_wrong, "/hotfix/v1/apply", {"module": mod.__name__})
        assert status == 401 and "siblings" not in body

        allowed = wsgi_app(TOKEN, allowed_roots=[modules.dir], socket_dir=d, allow_single_process=True)
        status, body = call(allowed, "/hotfix/v1/apply", {"module": mod.__name__, "probation": 0})
        assert status == 200 and mod.f() == 2
        assert body["scope"]["pid"] == os.getpid() and body["scope"]["siblings"] == [os.getppid()]
        assert "this process only" in body["scope"]["note"]
    finally:
        sibling.close()


def test_no_siblings_no_refusal(modules, short_dir):
    mod = modules.create("def f():\n    return 1\n")
    app = wsgi_app(TOKEN, allowed_roots=[modules.dir], socket_dir=short_dir())
    modules.write(mod, "def f():\n    return 2\n")
    status, body = call(app, "/hotfix/v1/apply", {"module": mod.__name__, "probation": 0})
    assert status == 200 and mod.f() == 2
    assert body["scope"] == {"pid": os.getpid(), "siblings": [], "note": f"this process only (pid {os.getpid()})"}
