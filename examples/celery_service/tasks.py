"""A Celery app with one task. No hotfix code: `hotfix run` adds everything (see README, "Whole services")."""

from __future__ import annotations

import os

import pricing
from celery import Celery

BROKER = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("tasks", broker=BROKER, backend=BROKER)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                task_acks_late=False, result_expires=600)


@app.task(name="tasks.quote")
def quote(amount: int) -> dict:
    try:
        return {"total": pricing.total(amount), "pid": os.getpid()}
    except Exception as exc:  # a failed task that says which process failed
        return {"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}
