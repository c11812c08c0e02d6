"""FastAPI under ``uvicorn --workers 2`` through ``hotfix run``, no application changes.

uvicorn's supervisor starts its workers with multiprocessing's *spawn*: each
is a fresh interpreter that bootstraps hotfix from ``PYTHONPATH``. The
supervisor never imports the app: it is ``not-loaded`` and skipped.

Each HTTP request is an async unit of work: a request that awaits between two
calls into a patched module sees one version, while patches apply under load.
"""

from __future__ import annotations

import os
import signal

import pytest

from hotfix.admin import Client
from tests.helpers import EXAMPLES

from .service_helpers import (
    GREETING_BAD,
    GREETING_GOOD,
    Load,
    Service,
    answers,
    copy_example,
    greeting_hotfix_run,
    hotfix_run,
    loaded,
    rollout,
    unix_get,
)

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

GOOD, BAD = GREETING_GOOD, GREETING_BAD


def test_uvicorn_workers(tmp_path, short_dir):
    app = copy_example(EXAMPLES / "asgi_service", tmp_path / "app")
    sockets = short_dir("hfsu-")
    http = os.path.join(short_dir("hfuh-"), "u.sock")
    argv = [*greeting_hotfix_run(sockets),
            "uvicorn", "--uds", http, "--workers", "2", "--log-level", "warning", "app:app"]
    service = Service(argv, app, tmp_path / "uvicorn.log", sockets)
    try:
        service.wait_for("2 workers with greeting loaded", loaded(sockets, "greeting", 2))
        service.wait_for("HTTP answers", answers(http))
        code, doc = rollout("--socket-dir", sockets, "status", "greeting")
        supervisor = [p for p in doc["processes"] if p["pid"] == service.proc.pid]
        assert supervisor and supervisor[0]["outcome"] == "not-loaded", doc
        assert (code, doc["converged"]) == (0, True), doc

        (app / "greeting.py").write_text(GOOD)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        assert [p["outcome"] for p in doc["processes"] if p["pid"] == service.proc.pid] == ["not-loaded"]
        assert doc["canary"] != service.proc.pid
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["greeting"] == "Hi world"

        # a bad patch: only the canary fails, only during its check
        (app / "greeting.py").write_text(BAD)
        with Load(lambda: unix_get(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]}
        assert load.results[-1][1] == 200 and not load.errors
        (app / "greeting.py").write_text(GOOD)  # the operator deploys the good file again

        # a replaced worker (spawned afresh) imports the file on disk: the patched version
        patched = [p["pid"] for p in doc["processes"] if p["role"] in ("worker", "canary")]
        os.kill(patched[0], signal.SIGKILL)
        service.wait_for("a replacement worker", lambda: (d := loaded(sockets, "greeting", 2)()) and any(
            p["sha256"] and p["pid"] not in patched and p["pid"] != service.proc.pid for p in d["processes"]))
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hi world"}

        # rollback: the patched worker undoes its patch; the replacement imported the new file and
        # adopts the restored one
        (app / "greeting.py").write_text((EXAMPLES / "asgi_service" / "greeting.py").read_text())
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hello world"}
    finally:
        service.close()


AWAITING_APP = """
import asyncio, os
import versioned
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def both() -> dict:
    first = versioned.tag()
    await asyncio.sleep(0.01)  # other requests run meanwhile; a patch may be requested now
    second = versioned.tag()
    return {"first": first, "second": second, "pid": os.getpid()}
"""


def versioned(n: int) -> str:
    return f"def tag() -> str:\n    return 'v{n}'\n"


def test_a_request_awaiting_between_two_calls_sees_one_version_under_patches(tmp_path, short_dir):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text(AWAITING_APP)
    (app / "versioned.py").write_text(versioned(0))
    sockets = short_dir("hfsv-")
    http = os.path.join(short_dir("hfvh-"), "u.sock")
    argv = [*hotfix_run(sockets, "--probation", "0"), "uvicorn", "--uds", http, "--log-level", "warning", "app:app"]
    service = Service(argv, app, tmp_path / "uvicorn.log", sockets)
    patches = 6
    holds: list[dict] = []
    try:
        service.wait_for("versioned loaded", loaded(sockets, "versioned", 1))
        service.wait_for("HTTP answers", answers(http))
        with open(os.path.join(sockets, "token")) as f:
            token = f.read().strip()
        status = Client(socket_path=os.path.join(sockets, f"{service.proc.pid}.sock"), token=token).status().body
        # uvicorn's loop is registered by hotfix run (asyncio's or uvloop's, whichever uvicorn picked)
        assert [(w["name"], bool(w["loop"])) for w in status["workers"]] == [("asyncio loop (MainThread)", True)], status
        print("uvicorn's loop:", status["workers"][0]["loop"])
        loads = [Load(lambda: unix_get(http)) for _ in range(4)]
        for load in loads:
            load.__enter__()
        try:
            for n in range(1, patches + 2):
                grown = [load.grown_by(5) for load in loads]
                service.wait_for("more load", lambda grown=grown: all(more() for more in grown))
                if n > patches:
                    break
                (app / "versioned.py").write_text(versioned(n))
                code, doc = rollout("--socket-dir", sockets, "apply", "versioned")
                assert (code, doc["outcome"]) == (0, "applied"), doc
                hold = doc["processes"][0]["hold"]  # the loop parked; requests in flight were waited for
                assert hold["workers"] == ["asyncio loop (MainThread)"] and hold["units"] >= hold["units_in_flight"], hold
                holds.append(hold)
        finally:
            for load in loads:
                load.__exit__()
        results = [r for load in loads for r in load.results]
        errors = [e for load in loads for e in load.errors]
        assert not errors and not [r for r in results if r[1] != 200], (errors[:3], results[:3])
        mixed = [r[2] for r in results if r[2]["first"] != r[2]["second"]]
        assert mixed == [], f"{len(mixed)} of {len(results)} requests saw two versions: {mixed[:5]}"
        seen = {r[2]["first"] for r in results}
        assert {"v0", f"v{patches}"} <= seen, seen
        assert all(load.results[-1][2]["first"] == f"v{patches}" for load in loads)
        print("holds:", [(h["units_in_flight"], h["units"], round(h["seconds"] * 1e3, 2)) for h in holds])
    finally:
        service.close()
