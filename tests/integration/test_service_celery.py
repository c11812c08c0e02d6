"""Celery (a real redis-server broker) under ``hotfix run``, no application changes.

prefork: the main process imports the tasks and forks the pool: it is patched
too, so children forked later (``--max-tasks-per-child``) are born patched.
threads: one process runs the tasks in a thread pool; each task is a unit of
work (Celery's task signals), so a patch waits for the tasks in flight, holds
new ones for the swap, and reports them as held.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hotfix.admin._client import Client
from tests.helpers import EXAMPLES

from .service_helpers import (
    Load,
    Service,
    copy_example,
    hotfix_run,
    loaded,
    rollout,
    service_env,
)

celery = pytest.importorskip("celery")

GOOD = "def total(amount: int) -> int:\n    return amount * 3\n"
BAD = 'def total(amount: int) -> int:\n    raise RuntimeError("regression")\n'


def quote(celery_client, amount: int = 7) -> tuple[int, dict]:
    body = celery_client.send_task("tasks.quote", args=[amount]).get(timeout=60)
    return (500 if "error" in body else 200), body


def test_celery_prefork(tmp_path, short_dir, redis_server, celery_client):
    app = copy_example(EXAMPLES / "celery_service", tmp_path / "app")
    sockets = short_dir("hfsc-")
    argv = [*hotfix_run(sockets, "--check", "pricing=checks:smoke", "--probation", "0.3"),
            "celery", "-A", "tasks", "worker", "--pool", "prefork", "--concurrency", "2",
            "--max-tasks-per-child", "25", "--without-heartbeat", "--without-mingle", "--without-gossip",
            "--loglevel", "WARNING"]
    service = Service(argv, app, tmp_path / "celery.log", sockets, env=service_env(REDIS_URL=redis_server.url))
    try:
        service.wait_for("main process and 2 children with pricing loaded", loaded(sockets, "pricing", 3))
        code, doc = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, doc["converged"]) == (0, True), doc
        main = [p for p in doc["processes"] if p["pid"] == service.proc.pid]
        assert main and main[0]["role"] == "fork-source", doc

        # a good patch while tasks flow (children are recycled meanwhile): zero failed tasks
        (app / "pricing.py").write_text(GOOD)
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
            service.wait_for("more tasks", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), [(p["pid"], p["role"], p["outcome"], p["message"]) for p in doc["processes"]]
        assert doc["canary"] != service.proc.pid
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["total"] == 21

        # children forked after the rollout (recycled every 25 tasks) run the patched code
        before = {p["pid"] for p in doc["processes"]}
        results = [quote(celery_client)[1] for _ in range(80)]
        assert {r["total"] for r in results} == {21}
        assert {r["pid"] for r in results} - before, "no child was recycled"
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status

        # a bad patch: the canary's check fails, it rolls back; failures only from the canary
        (app / "pricing.py").write_text(BAD)
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
            service.wait_for("more tasks", load.grown_by(20))
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]}
        assert load.results[-1][1] == 200 and not load.errors

        # undo the good rollout in every process (children forked since included), restore the file
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        (app / "pricing.py").write_text((EXAMPLES / "celery_service" / "pricing.py").read_text())
        assert {quote(celery_client)[1]["total"] for _ in range(60)} == {14}
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status
    finally:
        service.close()
    assert os.path.isdir(sockets)


#: A task that waits for a file: the test holds one task in flight until the patch's pause waits for it.
GATED = """
import os
import time

from tasks import app


@app.task(name="gated.wait")
def wait(started: str, gate: str) -> int:
    open(started, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def test_celery_threads_pool(tmp_path, short_dir, redis_server, celery_client):
    app = copy_example(EXAMPLES / "celery_service", tmp_path / "app")
    (app / "gated.py").write_text(GATED)  # a test task next to the app's (the app itself is unchanged)
    sockets = short_dir("hfct-")
    argv = [*hotfix_run(sockets, "--check", "pricing=checks:smoke", "--probation", "0.3"),
            "celery", "-A", "tasks", "worker", "--pool", "threads", "--concurrency", "4", "--include", "gated",
            "--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
    service = Service(argv, app, tmp_path / "celery.log", sockets, env=service_env(REDIS_URL=redis_server.url))
    try:
        service.wait_for("the worker process with pricing loaded", loaded(sockets, "pricing", 1))
        code, doc = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, doc["converged"]) == (0, True), doc
        [proc] = [p for p in doc["processes"] if p["sha256"]]
        assert proc["pid"] == service.proc.pid, doc  # the threads pool runs tasks in the main process
        endpoint = Client(socket_path=os.path.join(sockets, f"{proc['pid']}.sock"),
                          token=Path(sockets, "token").read_text().strip())

        # a good patch while tasks flow, one task held in flight until the pause waits for it
        (app / "pricing.py").write_text(GOOD)
        started, gate = tmp_path / "started", tmp_path / "gate"
        gated = celery_client.send_task("gated.wait", args=[str(started), str(gate)])
        service.wait_for("the gated task to start", started.exists)
        outcome: dict = {}

        def apply() -> None:
            outcome["code"], outcome["doc"] = rollout("--socket-dir", sockets, "apply", "pricing", "--timeout", "60")

        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            applying = threading.Thread(target=apply, name="rollout")
            applying.start()
            try:
                service.wait_for("the pause to wait for the gated task",
                                 lambda: endpoint.status().body.get("safepoints", {}).get("pause_pending"))
            finally:
                gate.touch()
                applying.join(300)
            service.wait_for("more tasks", load.grown_by(20))
        code, doc = outcome["code"], outcome["doc"]
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        assert gated.get(timeout=60) == service.proc.pid
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["total"] == 21
        [canary] = [p for p in doc["processes"] if p["outcome"] == "applied"]
        hold = canary["hold"]
        assert hold["workers"] == [] and hold["units_in_flight"] >= 1 and hold["units"] >= hold["units_in_flight"], hold
        assert f"held {hold['units']} unit" in canary["message"] and "unit(s) of work" in doc["message"], doc
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status

        # a bad patch: the check fails in the canary (the only process), it rolls back; failures only meanwhile
        (app / "pricing.py").write_text(BAD)
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            began = time.monotonic()
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
            ended = time.monotonic()
            service.wait_for("more tasks", load.grown_by(20))
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]}
        assert during(load, began, ended), "a failed task outside the canary's probation"
        assert load.results[-1][1] == 200 and not load.errors

        # undo the good rollout, restore the file: converged on the original code
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        (app / "pricing.py").write_text((EXAMPLES / "celery_service" / "pricing.py").read_text())
        assert {quote(celery_client)[1]["total"] for _ in range(20)} == {14}
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status
    finally:
        service.close()


def during(load: Load, began: float, ended: float) -> bool:
    """Every failed task ended after ``began`` and was sent before ``ended`` (the load sends each one
    when the previous answer arrives: its answer may come back after the rollout has returned)."""
    answers = load.results
    return all(began <= answers[i][0] and (i == 0 or answers[i - 1][0] <= ended)
               for i in range(len(answers)) if answers[i][1] != 200)
