"""The FastAPI example under gunicorn with uvicorn workers, through the README's recipe, no app changes.

The patch that fails passes its check and raises only on real requests: the
canary's probation must catch it, with failed requests confined to the
canary, and the other worker never patched.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import (
    GREETING_GOOD,
    Load,
    Service,
    answers,
    copy_example,
    loaded,
    readme_recipe,
    rollout,
    unix_get,
)

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn.workers")
pytest.importorskip("fastapi")

ORIGINAL = (EXAMPLES / "asgi_service" / "greeting.py").read_text()
#: Passes ``checks:smoke`` (``greet("x")``); every request (``greet("world")``) raises.
BAD_IN_TRAFFIC = ('def greet(name: str) -> str:\n    if name == "world":\n        raise RuntimeError("regression")\n'
                  '    return f"Hi {name}"\n')


def test_fastapi_under_gunicorn_uvicorn_workers(tmp_path, short_dir):
    app = copy_example(EXAMPLES / "asgi_service", tmp_path / "app")
    sockets = short_dir("hfgu-")
    http = os.path.join(short_dir("hfgv-"), "g.sock")
    recipe = readme_recipe("asgi_service", "gunicorn")
    argv = recipe.argv(sockets, "--probation", "0.3", command_extra=[
        "--bind", f"unix:{http}", "--control-socket", os.path.join(sockets, "gunicorn.ctl")])
    service = Service(argv, app, tmp_path / "gunicorn.log", sockets)
    master = service.proc.pid
    try:
        service.wait_for("2 workers with greeting loaded", loaded(sockets, "greeting", 2))
        service.wait_for("HTTP answers", answers(http))
        code, doc = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, doc["converged"]) == (0, True), doc
        assert {p["pid"]: p["outcome"] for p in doc["processes"]}[master] == "not-loaded", doc

        # a good patch under load: no failed request, the last answers are the new version
        (app / "greeting.py").write_text(GREETING_GOOD)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        assert doc["canary"] != master
        canary = next(p for p in doc["processes"] if p["pid"] == doc["canary"])
        assert "unit(s) of work ran in it" in canary["message"], canary  # the probation saw requests
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["greeting"] == "Hi world"

        # a patch that fails only on requests: the canary's probation catches it and undoes it
        (app / "greeting.py").write_text(BAD_IN_TRAFFIC)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting", "--probation", "20")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (1, "rolled-back", False), doc
        rows = {p["pid"]: p for p in doc["processes"]}
        assert rows[doc["canary"]]["outcome"] == "rolled-back", rows
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]}, load.failed()[:3]
        assert not load.errors and load.results[-1][1] == 200
        good = {p["sha256"] for p in rows.values() if p["sha256"]}
        assert len(good) == 1 and doc["sha256"] not in good, rows  # every row: the code it runs again

        # the operator deploys the good file again; a replaced worker imports it
        (app / "greeting.py").write_text(GREETING_GOOD)
        workers = [pid for pid in rows if pid != master]
        os.kill(workers[0], signal.SIGKILL)
        service.wait_for("a replacement worker", lambda: (d := loaded(sockets, "greeting", 2)()) and any(
            p["sha256"] and p["pid"] not in workers for p in d["processes"]))
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hi world"}
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status

        # rollback: restore the previous file, then undo the last rollout everywhere
        (app / "greeting.py").write_text(ORIGINAL)
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hello world"}
    finally:
        service.close()
