"""Celery (prefork, a real redis-server broker) under ``hotfix run``, no application changes.

The main process imports the tasks and forks the pool: it is patched too, so
children forked later (``--max-tasks-per-child``) are born patched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import (
    Load,
    RedisServer,
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


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)")
    server = RedisServer(tmp_path)
    yield server
    server.close()


@pytest.fixture
def client(redis_server):
    app = celery.Celery("hotfix-tests", broker=redis_server.url, backend=redis_server.url)
    app.conf.broker_connection_retry_on_startup = True
    yield app
    app.close()


def quote(client, amount: int = 7) -> tuple[int, dict]:
    body = client.send_task("tasks.quote", args=[amount]).get(timeout=60)
    return (500 if "error" in body else 200), body


def test_celery_prefork(tmp_path, short_dir, redis_server, client):
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
        with Load(lambda: quote(client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
            service.wait_for("more tasks", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), [(p["pid"], p["role"], p["outcome"], p["message"]) for p in doc["processes"]]
        assert doc["canary"] != service.proc.pid
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["total"] == 21

        # children forked after the rollout (recycled every 25 tasks) run the patched code
        before = {p["pid"] for p in doc["processes"]}
        results = [quote(client)[1] for _ in range(80)]
        assert {r["total"] for r in results} == {21}
        assert {r["pid"] for r in results} - before, "no child was recycled"
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status

        # a bad patch: the canary's check fails, it rolls back; failures only from the canary
        (app / "pricing.py").write_text(BAD)
        with Load(lambda: quote(client)) as load:
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
        assert {quote(client)[1]["total"] for _ in range(60)} == {14}
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (0, True), status
    finally:
        service.close()
    assert os.path.isdir(sockets)
