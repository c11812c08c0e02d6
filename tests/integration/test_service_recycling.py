"""Workers recycled faster than a probation: the canary is never the process that serves nothing.

Celery prefork with a small ``--max-tasks-per-child`` under load: children
live a few tasks. Before, every child canary exited mid-probation, the
rollout fell back to Celery's main process (it runs no task: its probation
proved nothing), reported APPLIED, and a patch that fails every task went to
every child born from then on.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import (
    Load,
    Service,
    copy_example,
    loaded,
    readme_recipe,
    rollout,
    service_env,
)

celery = pytest.importorskip("celery")

GOOD = "def total(amount: int) -> int:\n    return amount * 3\n"
#: Passes the smoke check (amounts 0 and 1) and fails every task the load sends (amount 7).
BAD_IN_TRAFFIC = ('def total(amount: int) -> int:\n    if amount == 7:\n        raise RuntimeError("regression")\n'
                  '    return amount * 3\n')


def quote(celery_client) -> tuple[int, dict]:
    body = celery_client.send_task("tasks.quote", args=[7]).get(timeout=60)
    return (500 if "error" in body else 200), body


def rows(doc: dict) -> list[tuple]:
    return [(p["pid"], p["role"], p["outcome"], p["late"], p["message"]) for p in doc["processes"]]


def test_celery_children_recycled_faster_than_the_probation(tmp_path, short_dir, redis_server, celery_client):
    app = copy_example(EXAMPLES / "celery_service", tmp_path / "app")
    sockets = short_dir("hfrc-")
    # the README's Celery recipe, children recycled every 5 tasks (the last --max-tasks-per-child counts)
    argv = readme_recipe("celery_service", "celery").argv(sockets, command_extra=[
        "--max-tasks-per-child", "5", "--without-heartbeat", "--without-mingle", "--without-gossip",
        "--loglevel", "WARNING"])
    service = Service(argv, app, tmp_path / "celery.log", sockets, env=service_env(REDIS_URL=redis_server.url))
    main = service.proc.pid
    try:
        service.wait_for("main process and 2 children with pricing loaded", loaded(sockets, "pricing", 3))
        code, doc = rollout("--socket-dir", sockets, "status", "pricing")
        by_pid = {p["pid"]: p for p in doc["processes"]}
        assert by_pid[main]["supervisor"] and by_pid[main]["role"] == "fork-source", doc
        original = by_pid[main]["sha256"]

        # 1. a probation longer than a child lives: no canary survives it. The main process is not
        # taken instead; nothing live changes and the rollout says so.
        (app / "pricing.py").write_text(GOOD)
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing", "--probation", "30")
            service.wait_for("more tasks", load.grown_by(20))
        assert (code, doc["outcome"], doc["converged"]) == (3, "aborted", False), rows(doc)
        assert "no canary" in doc["message"] and "no live process was changed" in doc["message"], doc["message"]
        assert doc["canary"] is None and main not in {p["pid"] for p in doc["processes"] if p["outcome"] == "applied"}
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        # the patch ran only in canaries, while they lived (each exited mid-probation, patch and all)
        exited = {p["pid"] for p in doc["processes"] if p["outcome"] == "gone"}
        assert {r[2]["pid"] for r in load.results if r[2]["total"] != 14} <= exited, rows(doc)
        assert {quote(celery_client)[1]["total"] for _ in range(20)} == {14}  # every live child runs the original
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert {p["pid"]: p["sha256"] for p in status["processes"]}[main] == original, status

        # 2. a short probation: a child is the canary, the main process is patched after it, and
        # children forked from then on are born patched
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing", "--probation", "0")
            service.wait_for("more tasks", load.grown_by(40))
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), rows(doc)
        assert doc["canary"] not in (None, main), rows(doc)
        assert {p["pid"]: p["outcome"] for p in doc["processes"]}[main] == "applied", rows(doc)
        assert not load.errors and not load.failed(), (load.errors[:3], load.failed()[:3])
        assert load.results[-1][2]["total"] == 21

        # 3. a patch that passes its check and fails every task: the canary (a child) fails its
        # probation and undoes it; the main process is not touched, later children run GOOD
        (app / "pricing.py").write_text(BAD_IN_TRAFFIC)
        with Load(lambda: quote(celery_client)) as load:
            service.wait_for("some tasks", lambda: len(load.results) > 20)
            code, doc = rollout("--socket-dir", sockets, "apply", "pricing", "--probation", "30")
            service.wait_for("more tasks", load.grown_by(40))
        assert (code, doc["outcome"]) == (1, "rolled-back"), rows(doc)
        assert doc["canary"] != main
        # failures only in canaries during their probation: the last one, and earlier ones that were
        # recycled mid-probation (each exit took its patch with it)
        exited = {p["pid"] for p in doc["processes"] if p["outcome"] == "gone"}
        assert {r[2]["pid"] for r in load.failed()} <= {doc["canary"]} | exited, rows(doc)
        assert not load.errors and load.results[-1][1] == 200
        assert {r[2]["total"] for r in load.results[-20:]} == {21}
        code, status = rollout("--socket-dir", sockets, "status", "pricing")
        assert (code, status["converged"]) == (1, False), status  # the disk has the bad file; nothing runs it
        assert {p["sha256"] for p in status["processes"] if p["sha256"]} == {sha256(GOOD)}, status
    finally:
        service.close()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
