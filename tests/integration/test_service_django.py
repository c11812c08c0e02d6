"""A small Django app under gunicorn (gthread, 2 workers) through ``hotfix run``, no application changes.

Django loads its URLconf (and so the views and ``greeting``) on the first
request: a worker that has not served one yet is ``not-loaded`` and skipped.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import (
    GREETING_BAD,
    GREETING_GOOD,
    Load,
    Service,
    copy_example,
    loaded,
    readme_recipe,
    rollout,
    unix_get,
)

pytest.importorskip("django")
pytest.importorskip("gunicorn")

GOOD, BAD = GREETING_GOOD, GREETING_BAD


def test_django_gunicorn_gthread(tmp_path, short_dir):
    app = copy_example(EXAMPLES / "django_service", tmp_path / "app")
    sockets = short_dir("hfsd-")
    http = os.path.join(short_dir("hfdh-"), "d.sock")
    argv = readme_recipe("django_service", "gunicorn").argv(sockets, "--probation", "0.3", command_extra=[
        "--bind", f"unix:{http}", "--control-socket", os.path.join(sockets, "gunicorn.ctl")])
    service = Service(argv, app, tmp_path / "django.log", sockets)
    try:
        service.wait_for("2 workers", lambda: len(loaded(sockets, "settings", 3)() or {}))
        code, doc = rollout("--socket-dir", sockets, "status", "greeting")
        assert {p["outcome"] for p in doc["processes"]} == {"not-loaded"}, doc  # no request served yet
        (app / "greeting.py").write_text(GOOD)
        code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
        assert (code, doc["outcome"]) == (0, "not-loaded"), doc
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hi world"}  # they import the file on disk
        (app / "greeting.py").write_text((EXAMPLES / "django_service" / "greeting.py").read_text())
        code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        # every worker serves now (gthread: requests spread over both)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("both workers serving", lambda: len({r[2]["pid"] for r in load.results}) == 2)
        assert {r[2]["greeting"] for r in load.results} == {"Hello world"}

        (app / "greeting.py").write_text(GOOD)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        assert doc["canary"] != service.proc.pid
        holders = {p["pid"]: p for p in doc["processes"]}
        assert holders[service.proc.pid]["outcome"] == "not-loaded"  # the master loaded settings, not the views
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["greeting"] == "Hi world"

        (app / "greeting.py").write_text(BAD)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]}
        assert load.results[-1][1] == 200 and not load.errors

        # a replaced worker (forked from the master, which never loaded the views) imports the file
        # on disk at its first request: the operator deployed the good file again meanwhile
        (app / "greeting.py").write_text(GOOD)
        workers = [p["pid"] for p in doc["processes"] if p["pid"] != service.proc.pid]
        os.kill(workers[0], signal.SIGKILL)
        service.wait_for("a replacement worker", lambda: (d := loaded(sockets, "settings", 3)()) and any(
            p["pid"] not in workers and p["pid"] != service.proc.pid for p in d["processes"]))
        assert {unix_get(http)[1]["greeting"] for _ in range(30)} == {"Hi world"}
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status

        (app / "greeting.py").write_text((EXAMPLES / "django_service" / "greeting.py").read_text())
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert code == 0, doc
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hello world"}
    finally:
        service.close()
