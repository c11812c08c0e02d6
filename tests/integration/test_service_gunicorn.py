"""gunicorn under ``hotfix run``, no application changes (examples/wsgi_service).

sync with ``--preload`` (the master is a fork source) and gthread with
``--max-requests`` (workers replaced under load). Each: a good patch under
load with zero failed requests, a bad one rolled back with failures only in
the canary, a replaced worker serving the patched version (gthread: after the
bad patch's rollback and the operator's restore, the original version),
``rollout status`` converged, ``rollout rollback`` restoring every process.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import (
    GREETING_BAD,
    GREETING_GOOD,
    Load,
    Service,
    answers,
    copy_example,
    greeting_hotfix_run,
    loaded,
    rollout,
    unix_get,
)

pytest.importorskip("gunicorn")

GOOD, BAD = GREETING_GOOD, GREETING_BAD


def start(tmp_path, short_dir, *gunicorn_args: str) -> tuple[Service, str]:
    app = copy_example(EXAMPLES / "wsgi_service", tmp_path / "app")
    sockets = short_dir("hfsg-")
    http = os.path.join(short_dir("hfgh-"), "g.sock")
    argv = [*greeting_hotfix_run(sockets),
            "gunicorn", "--bind", f"unix:{http}", "--workers", "2", "--graceful-timeout", "5",
            "--control-socket", os.path.join(sockets, "gunicorn.ctl"), *gunicorn_args, "app:application"]
    service = Service(argv, app, tmp_path / "service.log", sockets)
    return service, http


def greeting_of(http: str) -> tuple[int, dict]:
    return unix_get(http)


def test_gunicorn_sync_preload(tmp_path, short_dir):
    service, http = start(tmp_path, short_dir, "--preload")
    try:
        sockets = service.socket_dir
        service.wait_for("master and 2 workers with greeting loaded", loaded(sockets, "greeting", 3))
        service.wait_for("HTTP answers", answers(http))
        code, doc = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, doc["converged"]) == (0, True), doc
        master = [p for p in doc["processes"] if p["role"] == "fork-source"]
        assert len(master) == 1 and master[0]["pid"] == service.proc.pid, doc

        # a good patch under load: zero failed requests; the master is patched too
        (service.cwd / "greeting.py").write_text(GOOD)
        with Load(lambda: greeting_of(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        assert doc["canary"] != service.proc.pid  # never the master
        assert {p["outcome"] for p in doc["processes"]} == {"applied"}
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["greeting"] == "Hi world"

        # a worker replaced later is forked from the patched master: born patched
        victim = next(p["pid"] for p in doc["processes"] if p["pid"] != service.proc.pid)
        os.kill(victim, signal.SIGKILL)
        service.wait_for("a replacement worker", lambda: [
            p for p in loaded(sockets, "greeting", 3)() ["processes"] if p["sha256"] and p["pid"] != victim
            and p["pid"] not in {q["pid"] for q in doc["processes"]}] if loaded(sockets, "greeting", 3)() else None)
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hi world"}

        # a bad patch: rolled back by the canary's check; failures only from the canary, only meanwhile
        (service.cwd / "greeting.py").write_text(BAD)
        with Load(lambda: greeting_of(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            service.wait_for("more load", load.grown_by(20))
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        canary = doc["canary"]
        assert {r[2]["pid"] for r in load.failed()} <= {canary}
        assert load.results[-1][1] == 200 and not load.errors
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (1, False)  # the file on disk is the bad one: stale everywhere

        # undo the (good) rollout everywhere, the replacement worker included; restore the file
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        assert len([p for p in doc["processes"] if p["outcome"] == "rolled-back"]) == 3
        (service.cwd / "greeting.py").write_text((EXAMPLES / "wsgi_service" / "greeting.py").read_text())
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hello world"}
    finally:
        service.close()


#: Workers serve at least this many requests before gunicorn replaces them (``--max-requests``, plus jitter).
MAX_REQUESTS = 1000


def test_gunicorn_gthread_max_requests(tmp_path, short_dir):
    """Workers are replaced under load (``--max-requests``) and import the file on disk: no preload."""
    service, http = start(tmp_path, short_dir, "--worker-class", "gthread", "--threads", "4",
                          "--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", "100")
    original = (EXAMPLES / "wsgi_service" / "greeting.py").read_text()
    try:
        sockets = service.socket_dir
        service.wait_for("2 workers with greeting loaded", loaded(sockets, "greeting", 2))
        service.wait_for("HTTP answers", answers(http))
        code, doc = rollout("--socket-dir", sockets, "status", "greeting")
        master = [p for p in doc["processes"] if p["pid"] == service.proc.pid]
        assert master and master[0]["outcome"] == "not-loaded"  # no --preload: the master never imports the app
        first_workers = {p["pid"] for p in doc["processes"] if p["sha256"]}

        # a bad patch while the first workers serve (bounded load: none reaches --max-requests, so no
        # worker imports the bad file from disk): the canary's check fails, it rolls back; failures only
        # from the canary, only during its probation
        (service.cwd / "greeting.py").write_text(BAD)
        bound = MAX_REQUESTS - 100
        with Load(lambda: greeting_of(http), limit=bound) as load:
            service.wait_for("some load", lambda: len(load.results) > 20)
            began = time.monotonic()
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting")
            ended = time.monotonic()
            more = load.grown_by(20)
            service.wait_for("more load", lambda: more() or len(load.results) + len(load.errors) >= bound)
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        canary = doc["canary"]
        assert canary in first_workers, doc
        assert {r[2]["pid"] for r in load.failed()} <= {canary}, load.failed()[:3]
        assert during(load, began, ended), "a failed request outside the canary's probation"
        assert not load.errors, load.errors[:3]
        assert {r[2]["pid"] for r in load.results} <= first_workers, "a worker was replaced during the bounded load"
        assert {greeting_of(http)[1].get("greeting") for _ in range(10)} == {"Hello world"}
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (1, False)  # the file on disk is the bad one: stale everywhere

        # the operator restores the file; workers replaced after the rollback import it: the original code
        (service.cwd / "greeting.py").write_text(original)
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        served = [unix_get(http)[1] for _ in range(2 * (MAX_REQUESTS + 100) + 200)]
        assert {r["pid"] for r in served} - first_workers, "no worker was replaced"
        assert {r["greeting"] for r in served} == {"Hello world"}
        service.wait_for("the replacement workers' endpoints", loaded(sockets, "greeting", 2))
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status

        (service.cwd / "greeting.py").write_text(GOOD)
        with Load(lambda: greeting_of(http)) as load:
            service.wait_for("some load", lambda: len(load.results) > 10)
            code, doc = rollout("--socket-dir", sockets, "apply", "greeting", "--probation", "0")
            service.wait_for("workers replaced", lambda: len(load.results) > 2500)
        outcomes = {p["outcome"] for p in doc["processes"]}
        # under this churn a worker may be replaced (and import the new file) before it is patched
        assert code == 0 and doc["outcome"] in ("applied", "unchanged") and doc["converged"], [
            (p["pid"], p["role"], p["outcome"], p["message"]) for p in doc["processes"]]
        assert outcomes <= {"applied", "unchanged", "gone", "not-loaded"}, doc
        assert doc["canary"] != service.proc.pid
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        pids = {r[2]["pid"] for r in load.results}
        assert len(pids) > 2, "no worker was replaced under load"
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hi world"}
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status

        # undo: the operator restores the file; patched workers undo their patch, workers that
        # imported the new file adopt the restored one
        (service.cwd / "greeting.py").write_text(original)
        for _ in range(2 * (MAX_REQUESTS + 100) + 200):  # replace the workers after the rollout (they import the restored file)
            unix_get(http)
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert code == 0 and doc["outcome"] in ("rolled-back", "unchanged"), doc
        code, status = rollout("--socket-dir", sockets, "status", "greeting")
        assert (code, status["converged"]) == (0, True), status
        assert {unix_get(http)[1]["greeting"] for _ in range(20)} == {"Hello world"}
    finally:
        service.close()


def during(load: Load, began: float, ended: float) -> bool:
    """Every failed request ended after ``began`` and was sent before ``ended`` (the load sends each one
    when the previous answer arrives: its answer may come back after the rollout has returned)."""
    answers = load.results
    return all(began <= answers[i][0] and (i == 0 or answers[i - 1][0] <= ended)
               for i in range(len(answers)) if answers[i][1] != 200)
