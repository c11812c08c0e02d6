"""A plain ThreadPoolExecutor service under ``hotfix run --cover-executors``, no application changes.

Each job is a unit of work: a patch waits for the jobs in flight (20 ms
each) and holds new ones only for the swap, instead of timing out on
threads nobody registered.
"""

from __future__ import annotations

import json

from tests.helpers import EXAMPLES

from .service_helpers import Service, copy_example, loaded, readme_recipe, rollout, service_env

GOOD = "def total(amount: int) -> int:\n    return amount * 3\n"
BAD = 'def total(amount: int) -> int:\n    raise RuntimeError("regression")\n'


def jobs(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_executor_service(tmp_path, short_dir):
    app = copy_example(EXAMPLES / "executor_service", tmp_path / "app")
    sockets = short_dir("hfse-")
    results = tmp_path / "results.jsonl"
    argv = readme_recipe("executor_service", "python").argv(sockets, "--probation", "0.3")
    service = Service(argv, app, tmp_path / "service.log", sockets, env=service_env(RESULTS=str(results)))
    try:
        service.wait_for("pricing loaded", loaded(sockets, "pricing", 1))
        service.wait_for("jobs done", lambda: len(jobs(results)) > 40)
        (app / "pricing.py").write_text(GOOD)
        code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
        assert (code, doc["outcome"], doc["converged"]) == (0, "applied", True), doc
        done = len(jobs(results))
        service.wait_for("more jobs", lambda: len(jobs(results)) > done + 40)
        records = jobs(results)
        assert not [r for r in records if "error" in r]
        assert records[-1]["total"] == records[-1]["n"] * 3
        (app / "pricing.py").write_text(BAD)
        code, doc = rollout("--socket-dir", sockets, "apply", "pricing")
        assert (code, doc["outcome"]) == (1, "rolled-back"), doc
        done = len(jobs(results))
        service.wait_for("more jobs", lambda: len(jobs(results)) > done + 40)
        last = jobs(results)[-1]  # read once: the service keeps appending
        assert last["total"] == last["n"] * 3  # the good version runs again
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (0, "rolled-back"), doc
        done = len(jobs(results))
        service.wait_for("more jobs", lambda: len(jobs(results)) > done + 40)
        last = jobs(results)[-1]
        assert last["total"] == last["n"] * 2
    finally:
        service.close()
