"""``concurrent.futures`` pools: each submitted call is a unit of work."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ._unit import UnitOfWork

T = TypeVar("T")
_ORIGINAL_SUBMIT = concurrent.futures.ThreadPoolExecutor.submit


def covered(fn: Callable[..., T], name: str = "executor job") -> Callable[..., T]:
    """``fn`` run as a unit of work (for ``executor.submit(covered(job), ...)``)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        with UnitOfWork(name):
            return fn(*args, **kwargs)

    run.hotfix_unit_of_work = True  # type: ignore[attr-defined]
    return run


def _covered_submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /,
                    *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    if not getattr(fn, "hotfix_unit_of_work", False):
        fn = covered(fn)
    return _ORIGINAL_SUBMIT(self, fn, *args, **kwargs)


def cover_executor(executor: concurrent.futures.ThreadPoolExecutor) -> concurrent.futures.ThreadPoolExecutor:
    """Every job submitted to this pool from now on is a unit of work. Returns the pool."""
    executor.submit = functools.partial(_covered_submit, executor)  # type: ignore[method-assign]
    return executor


def cover_executors() -> None:
    """Every ``ThreadPoolExecutor`` in the process (``hotfix run --cover-executors``). Idempotent."""
    concurrent.futures.ThreadPoolExecutor.submit = _covered_submit  # type: ignore[method-assign,assignment]
